"""Generated tianwang.v1 protobuf and gRPC modules (built from proto/tianwang/v1/*.proto)."""
