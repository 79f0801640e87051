"""The generated stubs are committed; they must match protos/kiki.proto (`make protos`)."""

import filecmp
import shutil
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_up_to_date(tmp_path: Path) -> None:
    (tmp_path / "protos").mkdir()
    shutil.copy(REPO / "protos" / "kiki.proto", tmp_path / "protos" / "kiki.proto")
    args = ["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}", str(tmp_path / "protos" / "kiki.proto")]  # fmt: skip
    assert protoc.main(args) == 0
    for name in ("kiki_pb2.py", "kiki_pb2.pyi", "kiki_pb2_grpc.py"):
        assert filecmp.cmp(tmp_path / "protos" / name, REPO / "protos" / name, shallow=False), (
            f"protos/{name} is stale: run `make protos`"
        )


def test_service_is_in_package_pb() -> None:
    from protos import kiki_pb2

    service = kiki_pb2.DESCRIPTOR.services_by_name["LTVService"]
    assert service.full_name == "pb.LTVService"
    assert {m.name for m in service.methods} == {"PredictLTV", "PredictLTVBatch"}
