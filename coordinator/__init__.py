"""gpt5os.coordinator: `gpt5os-coordinator`, which schedules data (not compute) for a run.

Where things live:
    run_spec.py   RunSpec, the one versioned value handed to nodes; presets
    runs.py       run directories: create_run, load_run, update_spec
    scheduler.py  shard leases, deadlines, completions, epochs (pure logic, injected clock)
    store.py      SQLite (WAL) persistence, schema versions and migrations
    records.py    in-memory node and round records, ApiError
    swarm.py      every coordinator operation, judged against state and committed to the store
    validate.py   request shape checks (INVALID_ARGUMENT)
    snapshot.py   SwarmSnapshot / deltas / NodeDetail / status JSON from a Swarm
    server.py     CoordinatorServer: grpc.aio service, health, reflection, metrics, DHT peer
    metrics.py    Prometheus metrics; dht.py: the hivemind bootstrap peer (lazy import)
    cli.py        the click CLI; data_*.py and manifest.py: data preparation
    testkit.py    hand-made data dirs and runs for tests
"""
