from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelSpec(_message.Message):
    __slots__ = ("preset", "vocab_size", "n_layer", "n_embd", "head_size")
    PRESET_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    N_LAYER_FIELD_NUMBER: _ClassVar[int]
    N_EMBD_FIELD_NUMBER: _ClassVar[int]
    HEAD_SIZE_FIELD_NUMBER: _ClassVar[int]
    preset: str
    vocab_size: int
    n_layer: int
    n_embd: int
    head_size: int
    def __init__(self, preset: _Optional[str] = ..., vocab_size: _Optional[int] = ..., n_layer: _Optional[int] = ..., n_embd: _Optional[int] = ..., head_size: _Optional[int] = ...) -> None: ...

class InnerOptimizerSpec(_message.Message):
    __slots__ = ("name", "lr", "min_lr", "weight_decay", "beta1", "beta2", "eps", "warmup_tokens", "decay_tokens", "grad_clip")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    MIN_LR_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    BETA1_FIELD_NUMBER: _ClassVar[int]
    BETA2_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DECAY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GRAD_CLIP_FIELD_NUMBER: _ClassVar[int]
    name: str
    lr: float
    min_lr: float
    weight_decay: float
    beta1: float
    beta2: float
    eps: float
    warmup_tokens: int
    decay_tokens: int
    grad_clip: float
    def __init__(self, name: _Optional[str] = ..., lr: _Optional[float] = ..., min_lr: _Optional[float] = ..., weight_decay: _Optional[float] = ..., beta1: _Optional[float] = ..., beta2: _Optional[float] = ..., eps: _Optional[float] = ..., warmup_tokens: _Optional[int] = ..., decay_tokens: _Optional[int] = ..., grad_clip: _Optional[float] = ...) -> None: ...

class OuterOptimizerSpec(_message.Message):
    __slots__ = ("lr", "momentum", "nesterov", "warmup_rounds")
    LR_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    NESTEROV_FIELD_NUMBER: _ClassVar[int]
    WARMUP_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    lr: float
    momentum: float
    nesterov: bool
    warmup_rounds: int
    def __init__(self, lr: _Optional[float] = ..., momentum: _Optional[float] = ..., nesterov: _Optional[bool] = ..., warmup_rounds: _Optional[int] = ...) -> None: ...

class RobustSpec(_message.Message):
    __slots__ = ("clip", "weight_cap", "max_claim_rounds", "send_factor")
    CLIP_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_CAP_FIELD_NUMBER: _ClassVar[int]
    MAX_CLAIM_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    SEND_FACTOR_FIELD_NUMBER: _ClassVar[int]
    clip: float
    weight_cap: float
    max_claim_rounds: int
    send_factor: float
    def __init__(self, clip: _Optional[float] = ..., weight_cap: _Optional[float] = ..., max_claim_rounds: _Optional[int] = ..., send_factor: _Optional[float] = ...) -> None: ...

class RunSpec(_message.Message):
    __slots__ = ("spec_version", "run_id", "revision", "model", "tokenizer", "seq_len", "batch_size", "inner", "outer", "compression", "seed", "min_node_version", "matchmaking_time_s", "averaging_timeout_s", "val_batches", "inner_steps", "robust")
    SPEC_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_FIELD_NUMBER: _ClassVar[int]
    SEQ_LEN_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    INNER_FIELD_NUMBER: _ClassVar[int]
    OUTER_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MIN_NODE_VERSION_FIELD_NUMBER: _ClassVar[int]
    MATCHMAKING_TIME_S_FIELD_NUMBER: _ClassVar[int]
    AVERAGING_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    VAL_BATCHES_FIELD_NUMBER: _ClassVar[int]
    INNER_STEPS_FIELD_NUMBER: _ClassVar[int]
    ROBUST_FIELD_NUMBER: _ClassVar[int]
    spec_version: int
    run_id: str
    revision: int
    model: ModelSpec
    tokenizer: str
    seq_len: int
    batch_size: int
    inner: InnerOptimizerSpec
    outer: OuterOptimizerSpec
    compression: str
    seed: int
    min_node_version: str
    matchmaking_time_s: float
    averaging_timeout_s: float
    val_batches: int
    inner_steps: int
    robust: RobustSpec
    def __init__(self, spec_version: _Optional[int] = ..., run_id: _Optional[str] = ..., revision: _Optional[int] = ..., model: _Optional[_Union[ModelSpec, _Mapping]] = ..., tokenizer: _Optional[str] = ..., seq_len: _Optional[int] = ..., batch_size: _Optional[int] = ..., inner: _Optional[_Union[InnerOptimizerSpec, _Mapping]] = ..., outer: _Optional[_Union[OuterOptimizerSpec, _Mapping]] = ..., compression: _Optional[str] = ..., seed: _Optional[int] = ..., min_node_version: _Optional[str] = ..., matchmaking_time_s: _Optional[float] = ..., averaging_timeout_s: _Optional[float] = ..., val_batches: _Optional[int] = ..., inner_steps: _Optional[int] = ..., robust: _Optional[_Union[RobustSpec, _Mapping]] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("software_version", "device", "hostname", "display_name")
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    software_version: str
    device: str
    hostname: str
    display_name: str
    def __init__(self, software_version: _Optional[str] = ..., device: _Optional[str] = ..., hostname: _Optional[str] = ..., display_name: _Optional[str] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("public_key", "info", "invite", "swarm_public_key")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    INVITE_FIELD_NUMBER: _ClassVar[int]
    SWARM_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    public_key: bytes
    info: NodeInfo
    invite: str
    swarm_public_key: bytes
    def __init__(self, public_key: _Optional[bytes] = ..., info: _Optional[_Union[NodeInfo, _Mapping]] = ..., invite: _Optional[str] = ..., swarm_public_key: _Optional[bytes] = ...) -> None: ...

class SwarmToken(_message.Message):
    __slots__ = ("username", "public_key", "expiration_time", "signature")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    EXPIRATION_TIME_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    username: str
    public_key: bytes
    expiration_time: str
    signature: bytes
    def __init__(self, username: _Optional[str] = ..., public_key: _Optional[bytes] = ..., expiration_time: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("node_id", "session_token", "spec", "initial_peers", "heartbeat_interval_s", "lease_duration_s", "outer_round", "dht_prefix", "validation_shards", "certified", "swarm_token", "coordinator_public_key")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    INITIAL_PEERS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    LEASE_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    OUTER_ROUND_FIELD_NUMBER: _ClassVar[int]
    DHT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SHARDS_FIELD_NUMBER: _ClassVar[int]
    CERTIFIED_FIELD_NUMBER: _ClassVar[int]
    SWARM_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    session_token: str
    spec: RunSpec
    initial_peers: _containers.RepeatedScalarFieldContainer[str]
    heartbeat_interval_s: float
    lease_duration_s: float
    outer_round: int
    dht_prefix: str
    validation_shards: _containers.RepeatedCompositeFieldContainer[Lease]
    certified: CertifiedRound
    swarm_token: SwarmToken
    coordinator_public_key: bytes
    def __init__(self, node_id: _Optional[str] = ..., session_token: _Optional[str] = ..., spec: _Optional[_Union[RunSpec, _Mapping]] = ..., initial_peers: _Optional[_Iterable[str]] = ..., heartbeat_interval_s: _Optional[float] = ..., lease_duration_s: _Optional[float] = ..., outer_round: _Optional[int] = ..., dht_prefix: _Optional[str] = ..., validation_shards: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ..., certified: _Optional[_Union[CertifiedRound, _Mapping]] = ..., swarm_token: _Optional[_Union[SwarmToken, _Mapping]] = ..., coordinator_public_key: _Optional[bytes] = ...) -> None: ...

class NodeAuth(_message.Message):
    __slots__ = ("node_id", "session_token")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    session_token: str
    def __init__(self, node_id: _Optional[str] = ..., session_token: _Optional[str] = ...) -> None: ...

class NodeStats(_message.Message):
    __slots__ = ("tokens_per_second", "tokens_trained", "last_loss", "outer_round", "dht_maddrs")
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    TOKENS_TRAINED_FIELD_NUMBER: _ClassVar[int]
    LAST_LOSS_FIELD_NUMBER: _ClassVar[int]
    OUTER_ROUND_FIELD_NUMBER: _ClassVar[int]
    DHT_MADDRS_FIELD_NUMBER: _ClassVar[int]
    tokens_per_second: float
    tokens_trained: int
    last_loss: float
    outer_round: int
    dht_maddrs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tokens_per_second: _Optional[float] = ..., tokens_trained: _Optional[int] = ..., last_loss: _Optional[float] = ..., outer_round: _Optional[int] = ..., dht_maddrs: _Optional[_Iterable[str]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("auth", "stats", "swarm_public_key")
    AUTH_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    SWARM_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    auth: NodeAuth
    stats: NodeStats
    swarm_public_key: bytes
    def __init__(self, auth: _Optional[_Union[NodeAuth, _Mapping]] = ..., stats: _Optional[_Union[NodeStats, _Mapping]] = ..., swarm_public_key: _Optional[bytes] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("leases", "paused", "spec_revision", "certified", "swarm_token")
    LEASES_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    SPEC_REVISION_FIELD_NUMBER: _ClassVar[int]
    CERTIFIED_FIELD_NUMBER: _ClassVar[int]
    SWARM_TOKEN_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    paused: bool
    spec_revision: int
    certified: CertifiedRound
    swarm_token: SwarmToken
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ..., paused: _Optional[bool] = ..., spec_revision: _Optional[int] = ..., certified: _Optional[_Union[CertifiedRound, _Mapping]] = ..., swarm_token: _Optional[_Union[SwarmToken, _Mapping]] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("auth", "reason")
    AUTH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    auth: NodeAuth
    reason: str
    def __init__(self, auth: _Optional[_Union[NodeAuth, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class LeaveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Lease(_message.Message):
    __slots__ = ("shard_id", "tokens", "size_bytes", "sha256", "deadline_unix", "epoch")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    tokens: int
    size_bytes: int
    sha256: str
    deadline_unix: float
    epoch: int
    def __init__(self, shard_id: _Optional[str] = ..., tokens: _Optional[int] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., deadline_unix: _Optional[float] = ..., epoch: _Optional[int] = ...) -> None: ...

class LeaseShardRequest(_message.Message):
    __slots__ = ("auth",)
    AUTH_FIELD_NUMBER: _ClassVar[int]
    auth: NodeAuth
    def __init__(self, auth: _Optional[_Union[NodeAuth, _Mapping]] = ...) -> None: ...

class LeaseShardResponse(_message.Message):
    __slots__ = ("granted", "lease", "retry_after_s", "reason")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    lease: Lease
    retry_after_s: float
    reason: str
    def __init__(self, granted: _Optional[bool] = ..., lease: _Optional[_Union[Lease, _Mapping]] = ..., retry_after_s: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class FetchShardRequest(_message.Message):
    __slots__ = ("auth", "shard_id", "offset")
    AUTH_FIELD_NUMBER: _ClassVar[int]
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    auth: NodeAuth
    shard_id: str
    offset: int
    def __init__(self, auth: _Optional[_Union[NodeAuth, _Mapping]] = ..., shard_id: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class ShardChunk(_message.Message):
    __slots__ = ("offset", "data", "total_size")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    total_size: int
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_size: _Optional[int] = ...) -> None: ...

class CompleteShardRequest(_message.Message):
    __slots__ = ("auth", "shard_id", "tokens_trained", "mean_loss")
    AUTH_FIELD_NUMBER: _ClassVar[int]
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_TRAINED_FIELD_NUMBER: _ClassVar[int]
    MEAN_LOSS_FIELD_NUMBER: _ClassVar[int]
    auth: NodeAuth
    shard_id: str
    tokens_trained: int
    mean_loss: float
    def __init__(self, auth: _Optional[_Union[NodeAuth, _Mapping]] = ..., shard_id: _Optional[str] = ..., tokens_trained: _Optional[int] = ..., mean_loss: _Optional[float] = ...) -> None: ...

class CompleteShardResponse(_message.Message):
    __slots__ = ("counted", "message")
    COUNTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    counted: bool
    message: str
    def __init__(self, counted: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class ReportRoundRequest(_message.Message):
    __slots__ = ("auth", "round", "peer_node_ids", "tokens", "mean_loss", "duration_s", "averaging_s", "params_sha256", "val_loss", "group_tokens")
    AUTH_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PEER_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    MEAN_LOSS_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    AVERAGING_S_FIELD_NUMBER: _ClassVar[int]
    PARAMS_SHA256_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    GROUP_TOKENS_FIELD_NUMBER: _ClassVar[int]
    auth: NodeAuth
    round: int
    peer_node_ids: _containers.RepeatedScalarFieldContainer[str]
    tokens: int
    mean_loss: float
    duration_s: float
    averaging_s: float
    params_sha256: str
    val_loss: float
    group_tokens: int
    def __init__(self, auth: _Optional[_Union[NodeAuth, _Mapping]] = ..., round: _Optional[int] = ..., peer_node_ids: _Optional[_Iterable[str]] = ..., tokens: _Optional[int] = ..., mean_loss: _Optional[float] = ..., duration_s: _Optional[float] = ..., averaging_s: _Optional[float] = ..., params_sha256: _Optional[str] = ..., val_loss: _Optional[float] = ..., group_tokens: _Optional[int] = ...) -> None: ...

class ReportRoundResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShardProgress(_message.Message):
    __slots__ = ("total", "pending", "leased", "done")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    LEASED_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    total: int
    pending: int
    leased: int
    done: int
    def __init__(self, total: _Optional[int] = ..., pending: _Optional[int] = ..., leased: _Optional[int] = ..., done: _Optional[int] = ...) -> None: ...

class RunStatus(_message.Message):
    __slots__ = ("run_id", "preset", "epoch", "outer_round", "tokens_trained", "tokens_per_second", "shards", "epoch_coverage", "eta_s", "paused", "spec_revision", "started_unix", "epoch_tokens", "active_nodes", "checkpoint")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    OUTER_ROUND_FIELD_NUMBER: _ClassVar[int]
    TOKENS_TRAINED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    SPEC_REVISION_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_FIELD_NUMBER: _ClassVar[int]
    EPOCH_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_NODES_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    preset: str
    epoch: int
    outer_round: int
    tokens_trained: int
    tokens_per_second: float
    shards: ShardProgress
    epoch_coverage: float
    eta_s: float
    paused: bool
    spec_revision: int
    started_unix: float
    epoch_tokens: int
    active_nodes: int
    checkpoint: CheckpointSummary
    def __init__(self, run_id: _Optional[str] = ..., preset: _Optional[str] = ..., epoch: _Optional[int] = ..., outer_round: _Optional[int] = ..., tokens_trained: _Optional[int] = ..., tokens_per_second: _Optional[float] = ..., shards: _Optional[_Union[ShardProgress, _Mapping]] = ..., epoch_coverage: _Optional[float] = ..., eta_s: _Optional[float] = ..., paused: _Optional[bool] = ..., spec_revision: _Optional[int] = ..., started_unix: _Optional[float] = ..., epoch_tokens: _Optional[int] = ..., active_nodes: _Optional[int] = ..., checkpoint: _Optional[_Union[CheckpointSummary, _Mapping]] = ...) -> None: ...

class CheckpointSummary(_message.Message):
    __slots__ = ("round", "tokens", "params_sha256", "path", "written_at")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_SHA256_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_AT_FIELD_NUMBER: _ClassVar[int]
    round: int
    tokens: int
    params_sha256: str
    path: str
    written_at: float
    def __init__(self, round: _Optional[int] = ..., tokens: _Optional[int] = ..., params_sha256: _Optional[str] = ..., path: _Optional[str] = ..., written_at: _Optional[float] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "display_name", "device", "state", "tokens_per_second", "tokens_trained", "last_loss", "last_seen_unix", "joined_unix", "shards_done", "rounds", "software_version")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    TOKENS_TRAINED_FIELD_NUMBER: _ClassVar[int]
    LAST_LOSS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_UNIX_FIELD_NUMBER: _ClassVar[int]
    JOINED_UNIX_FIELD_NUMBER: _ClassVar[int]
    SHARDS_DONE_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    display_name: str
    device: str
    state: str
    tokens_per_second: float
    tokens_trained: int
    last_loss: float
    last_seen_unix: float
    joined_unix: float
    shards_done: int
    rounds: int
    software_version: str
    def __init__(self, node_id: _Optional[str] = ..., display_name: _Optional[str] = ..., device: _Optional[str] = ..., state: _Optional[str] = ..., tokens_per_second: _Optional[float] = ..., tokens_trained: _Optional[int] = ..., last_loss: _Optional[float] = ..., last_seen_unix: _Optional[float] = ..., joined_unix: _Optional[float] = ..., shards_done: _Optional[int] = ..., rounds: _Optional[int] = ..., software_version: _Optional[str] = ...) -> None: ...

class RoundStatus(_message.Message):
    __slots__ = ("round", "peers", "tokens", "mean_loss", "duration_s", "finished_unix", "node_ids", "val_loss")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    MEAN_LOSS_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    round: int
    peers: int
    tokens: int
    mean_loss: float
    duration_s: float
    finished_unix: float
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    val_loss: float
    def __init__(self, round: _Optional[int] = ..., peers: _Optional[int] = ..., tokens: _Optional[int] = ..., mean_loss: _Optional[float] = ..., duration_s: _Optional[float] = ..., finished_unix: _Optional[float] = ..., node_ids: _Optional[_Iterable[str]] = ..., val_loss: _Optional[float] = ...) -> None: ...

class LossPoint(_message.Message):
    __slots__ = ("tokens", "loss")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    tokens: int
    loss: float
    def __init__(self, tokens: _Optional[int] = ..., loss: _Optional[float] = ...) -> None: ...

class ThroughputPoint(_message.Message):
    __slots__ = ("unix", "tokens_per_second")
    UNIX_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    unix: float
    tokens_per_second: float
    def __init__(self, unix: _Optional[float] = ..., tokens_per_second: _Optional[float] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("id", "unix", "kind", "node_id", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    UNIX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: int
    unix: float
    kind: str
    node_id: str
    message: str
    def __init__(self, id: _Optional[int] = ..., unix: _Optional[float] = ..., kind: _Optional[str] = ..., node_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class SwarmSnapshot(_message.Message):
    __slots__ = ("run", "keeper", "nodes", "rounds", "loss_history", "val_loss_history", "throughput_history", "events", "server_unix")
    RUN_FIELD_NUMBER: _ClassVar[int]
    KEEPER_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    LOSS_HISTORY_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_HISTORY_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_HISTORY_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SERVER_UNIX_FIELD_NUMBER: _ClassVar[int]
    run: RunStatus
    keeper: KeeperStatus
    nodes: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    rounds: _containers.RepeatedCompositeFieldContainer[RoundStatus]
    loss_history: _containers.RepeatedCompositeFieldContainer[LossPoint]
    val_loss_history: _containers.RepeatedCompositeFieldContainer[LossPoint]
    throughput_history: _containers.RepeatedCompositeFieldContainer[ThroughputPoint]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    server_unix: float
    def __init__(self, run: _Optional[_Union[RunStatus, _Mapping]] = ..., keeper: _Optional[_Union[KeeperStatus, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ..., rounds: _Optional[_Iterable[_Union[RoundStatus, _Mapping]]] = ..., loss_history: _Optional[_Iterable[_Union[LossPoint, _Mapping]]] = ..., val_loss_history: _Optional[_Iterable[_Union[LossPoint, _Mapping]]] = ..., throughput_history: _Optional[_Iterable[_Union[ThroughputPoint, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., server_unix: _Optional[float] = ...) -> None: ...

class SwarmDelta(_message.Message):
    __slots__ = ("run", "keeper", "nodes", "rounds", "loss_history", "val_loss_history", "throughput_history", "events", "server_unix")
    RUN_FIELD_NUMBER: _ClassVar[int]
    KEEPER_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    LOSS_HISTORY_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_HISTORY_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_HISTORY_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SERVER_UNIX_FIELD_NUMBER: _ClassVar[int]
    run: RunStatus
    keeper: KeeperStatus
    nodes: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    rounds: _containers.RepeatedCompositeFieldContainer[RoundStatus]
    loss_history: _containers.RepeatedCompositeFieldContainer[LossPoint]
    val_loss_history: _containers.RepeatedCompositeFieldContainer[LossPoint]
    throughput_history: _containers.RepeatedCompositeFieldContainer[ThroughputPoint]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    server_unix: float
    def __init__(self, run: _Optional[_Union[RunStatus, _Mapping]] = ..., keeper: _Optional[_Union[KeeperStatus, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ..., rounds: _Optional[_Iterable[_Union[RoundStatus, _Mapping]]] = ..., loss_history: _Optional[_Iterable[_Union[LossPoint, _Mapping]]] = ..., val_loss_history: _Optional[_Iterable[_Union[LossPoint, _Mapping]]] = ..., throughput_history: _Optional[_Iterable[_Union[ThroughputPoint, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., server_unix: _Optional[float] = ...) -> None: ...

class SwarmUpdate(_message.Message):
    __slots__ = ("snapshot", "delta")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    snapshot: SwarmSnapshot
    delta: SwarmDelta
    def __init__(self, snapshot: _Optional[_Union[SwarmSnapshot, _Mapping]] = ..., delta: _Optional[_Union[SwarmDelta, _Mapping]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchSwarmRequest(_message.Message):
    __slots__ = ("min_interval_s",)
    MIN_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    min_interval_s: float
    def __init__(self, min_interval_s: _Optional[float] = ...) -> None: ...

class GetNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class NodeDetail(_message.Message):
    __slots__ = ("node", "loss_history", "throughput_history", "leases", "rounds")
    NODE_FIELD_NUMBER: _ClassVar[int]
    LOSS_HISTORY_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_HISTORY_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    node: NodeStatus
    loss_history: _containers.RepeatedCompositeFieldContainer[LossPoint]
    throughput_history: _containers.RepeatedCompositeFieldContainer[ThroughputPoint]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    rounds: _containers.RepeatedCompositeFieldContainer[RoundStatus]
    def __init__(self, node: _Optional[_Union[NodeStatus, _Mapping]] = ..., loss_history: _Optional[_Iterable[_Union[LossPoint, _Mapping]]] = ..., throughput_history: _Optional[_Iterable[_Union[ThroughputPoint, _Mapping]]] = ..., leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ..., rounds: _Optional[_Iterable[_Union[RoundStatus, _Mapping]]] = ...) -> None: ...

class CertifiedRound(_message.Message):
    __slots__ = ("round", "tokens", "params_sha256", "source")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_SHA256_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    round: int
    tokens: int
    params_sha256: str
    source: str
    def __init__(self, round: _Optional[int] = ..., tokens: _Optional[int] = ..., params_sha256: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class KeeperReportRequest(_message.Message):
    __slots__ = ("round", "tokens", "params_sha256", "unix", "nonce", "dht_maddrs", "hello", "signature", "checkpoint_error", "checkpoint_round", "swarm_public_key")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_SHA256_FIELD_NUMBER: _ClassVar[int]
    UNIX_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    DHT_MADDRS_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ERROR_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ROUND_FIELD_NUMBER: _ClassVar[int]
    SWARM_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    round: int
    tokens: int
    params_sha256: str
    unix: float
    nonce: bytes
    dht_maddrs: _containers.RepeatedScalarFieldContainer[str]
    hello: bool
    signature: bytes
    checkpoint_error: str
    checkpoint_round: int
    swarm_public_key: bytes
    def __init__(self, round: _Optional[int] = ..., tokens: _Optional[int] = ..., params_sha256: _Optional[str] = ..., unix: _Optional[float] = ..., nonce: _Optional[bytes] = ..., dht_maddrs: _Optional[_Iterable[str]] = ..., hello: _Optional[bool] = ..., signature: _Optional[bytes] = ..., checkpoint_error: _Optional[str] = ..., checkpoint_round: _Optional[int] = ..., swarm_public_key: _Optional[bytes] = ...) -> None: ...

class KeeperReportResponse(_message.Message):
    __slots__ = ("spec", "initial_peers", "dht_prefix", "certified", "swarm_token", "coordinator_public_key")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    INITIAL_PEERS_FIELD_NUMBER: _ClassVar[int]
    DHT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    CERTIFIED_FIELD_NUMBER: _ClassVar[int]
    SWARM_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    spec: RunSpec
    initial_peers: _containers.RepeatedScalarFieldContainer[str]
    dht_prefix: str
    certified: CertifiedRound
    swarm_token: SwarmToken
    coordinator_public_key: bytes
    def __init__(self, spec: _Optional[_Union[RunSpec, _Mapping]] = ..., initial_peers: _Optional[_Iterable[str]] = ..., dht_prefix: _Optional[str] = ..., certified: _Optional[_Union[CertifiedRound, _Mapping]] = ..., swarm_token: _Optional[_Union[SwarmToken, _Mapping]] = ..., coordinator_public_key: _Optional[bytes] = ...) -> None: ...

class KeeperStatus(_message.Message):
    __slots__ = ("live", "last_round", "last_report_unix", "certified", "checkpoint_round")
    LIVE_FIELD_NUMBER: _ClassVar[int]
    LAST_ROUND_FIELD_NUMBER: _ClassVar[int]
    LAST_REPORT_UNIX_FIELD_NUMBER: _ClassVar[int]
    CERTIFIED_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ROUND_FIELD_NUMBER: _ClassVar[int]
    live: bool
    last_round: int
    last_report_unix: float
    certified: CertifiedRound
    checkpoint_round: int
    def __init__(self, live: _Optional[bool] = ..., last_round: _Optional[int] = ..., last_report_unix: _Optional[float] = ..., certified: _Optional[_Union[CertifiedRound, _Mapping]] = ..., checkpoint_round: _Optional[int] = ...) -> None: ...

class ProbeReachabilityRequest(_message.Message):
    __slots__ = ("auth", "port")
    AUTH_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    auth: NodeAuth
    port: int
    def __init__(self, auth: _Optional[_Union[NodeAuth, _Mapping]] = ..., port: _Optional[int] = ...) -> None: ...

class ProbeReachabilityResponse(_message.Message):
    __slots__ = ("reachable", "greeting", "address", "error")
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    GREETING_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    reachable: bool
    greeting: bytes
    address: str
    error: str
    def __init__(self, reachable: _Optional[bool] = ..., greeting: _Optional[bytes] = ..., address: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...
