# Every target installs what it needs into .venv first; only python3 (>= 3.11) and make are assumed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench proto proto-tunnel venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==26.3
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/aggapi dev

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra tests

lint: $(STAMP)
	$(BIN)/ruff check aggapi edge certs tests bench
	$(BIN)/ruff format --check aggapi edge certs tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python bench/api.py
	$(BIN)/python bench/tunnel.py
	$(BIN)/python bench/controllers.py
	$(BIN)/python bench/health.py
	$(BIN)/python bench/shadow.py

# The second sed: mypy reads .pyi stubs even under follow_imports=skip, and protoc writes bare `Mapping`.
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I aggapi/storage/proto \
	  --python_out=aggapi/storage/proto --pyi_out=aggapi/storage/proto \
	  --grpc_python_out=aggapi/storage/proto aggapi/storage/proto/etcd.proto
	sed -i 's/^import etcd_pb2 as/from . import etcd_pb2 as/' aggapi/storage/proto/etcd_pb2_grpc.py
	sed -i '1i # mypy: disable-error-code="type-arg"' aggapi/storage/proto/etcd_pb2.pyi
	$(MAKE) proto-tunnel

# The edge tunnel's wire contract (imported by both edge.tunnel and aggapi.tunnel via edge.tunnel.protocol).
proto-tunnel: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I edge/tunnel/proto \
	  --python_out=edge/tunnel/proto --pyi_out=edge/tunnel/proto \
	  --grpc_python_out=edge/tunnel/proto edge/tunnel/proto/tunnel.proto
	sed -i 's/^import tunnel_pb2 as/from . import tunnel_pb2 as/' edge/tunnel/proto/tunnel_pb2_grpc.py
	sed -i '1i # mypy: disable-error-code="type-arg"' edge/tunnel/proto/tunnel_pb2.pyi

clean:
	rm -rf $(VENV) .aggapi-dev .pytest_cache .mypy_cache .ruff_cache
