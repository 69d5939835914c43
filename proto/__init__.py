"""The coordinator API's .proto files and their generated modules (regenerate with `make proto`).

`from gpt5os.proto import pb, pb_grpc` gives the messages and the service stubs.
"""

from gpt5os.proto.gpt5os.v1 import coordinator_pb2 as pb
from gpt5os.proto.gpt5os.v1 import coordinator_pb2_grpc as pb_grpc

__all__ = ["pb", "pb_grpc"]
