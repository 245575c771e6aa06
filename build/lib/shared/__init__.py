"""muster's library: the wire contract between services, settings groups, Valkey access and errors.

Services import from here; nothing here imports a service.
"""
