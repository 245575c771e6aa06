from shared import streams


def _hash_tag(key: str) -> str:
    """What a Valkey Cluster hashes to pick a key's slot: the text between the first { and the next }."""
    start = key.index("{")
    return key[start + 1 : key.index("}", start)]


def test_the_keys_of_one_server_s_queue_share_one_hash_tag() -> None:
    queue = streams.queue("k8s-gazelle")
    keys = [
        queue.stream.decode(),
        queue.depth.decode(),
        queue.started(b"1700000000000-0").decode(),
        queue.shares.decode(),
        queue.overflow(b"someone@example.com").decode(),
        streams.circuits("k8s-gazelle"),
        streams.subscribed("k8s-gazelle"),
        streams.subscribers("k8s-gazelle", "k8s://pods"),
    ]
    assert {_hash_tag(k) for k in keys} == {"k8s-gazelle"}
    assert _hash_tag(streams.calls("k8s-graveler")) != _hash_tag(queue.stream.decode())


def test_queue_keys_are_built_once_per_server() -> None:
    assert streams.queue("a") is streams.queue("a")
    assert streams.queue("a").stream == streams.calls("a").encode()
    assert streams.queue("a").depth == streams.depth("a").encode()
    assert streams.queue("a").shares == streams.shares("a").encode()
    assert streams.queue("a").started(b"1-0") == streams.started("a", "1-0").encode()
    assert streams.queue("a").overflow(b"p") == streams.overflow("a", "p").encode()


def test_every_key_is_under_muster_s_prefix() -> None:
    keys = [
        streams.calls("a"),
        streams.replies("r"),
        streams.inbox("w"),
        streams.session("s"),
        streams.session_subscriptions("s"),
        streams.worker_beat("w"),
        streams.replica_beat("r"),
        streams.SERVERS,
        streams.CAPABILITIES,
        streams.CONTROL,
        streams.DEAD_LETTER,
        streams.DISCOVERY_LEADER,
    ]
    assert all(k.startswith(streams.PREFIX) for k in keys)
    assert len(set(keys)) == len(keys)
