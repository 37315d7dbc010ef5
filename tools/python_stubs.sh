#!/bin/sh
# The Python stubs of protos/ in the client package (campaign_grpc_client/v1), and the contract
# with its comments for the server's reflection; run by `make proto` and by the Dockerfile.
#
#   PYTHON=.venv/bin/python MYPY_PLUGINS=.venv/bin sh tools/python_stubs.sh
#
# PYTHON must have grpcio-tools; MYPY_PLUGINS, where mypy-protobuf's plugins are, adds the .pyi
# type stubs. protoc writes `from campaign.v1 import ...`, after the .proto files' paths: the
# imports are rewritten to the package's own name, while the files keep their registered names
# (campaign/v1/campaign.proto), which every language and reflection share.
set -eu
python=${PYTHON:-python3}
stubs=clients/python/src/campaign_grpc_client/v1
descriptor=src/campaign_grpc/api/campaign_descriptor.binpb
scratch=build/python-stubs
protos=$(find protos -name '*.proto' | sort)

rm -rf "$stubs" "$scratch" src/campaign
mkdir -p "$scratch"
set -- --python_out="$scratch" --grpc_python_out="$scratch"
if [ -n "${MYPY_PLUGINS:-}" ]; then
    set -- "$@" --plugin=protoc-gen-mypy="$MYPY_PLUGINS/protoc-gen-mypy" \
        --plugin=protoc-gen-mypy_grpc="$MYPY_PLUGINS/protoc-gen-mypy_grpc" \
        --mypy_out="$scratch" --mypy_grpc_out="$scratch"
fi
# shellcheck disable=SC2086 # one argument per .proto file
"$python" -m grpc_tools.protoc -Iprotos "$@" $protos
mv "$scratch/campaign/v1" "$stubs"
rm -rf "$scratch"
for file in "$stubs"/*.py "$stubs"/*.pyi; do
    [ -e "$file" ] || continue
    sed -i -E -e 's/^from campaign\.v1 import /from campaign_grpc_client.v1 import /' \
        -e 's/(^|[^A-Za-z0-9_.])campaign\.v1\.([A-Za-z0-9_]+_pb2)/\1campaign_grpc_client.v1.\2/g' \
        "$file"
done
touch "$stubs/__init__.py"
# shellcheck disable=SC2086
"$python" -m grpc_tools.protoc -Iprotos --include_source_info \
    --descriptor_set_out="$descriptor" $protos
