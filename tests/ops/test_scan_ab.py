"""benchmarks/scan_ab.py's argument checks and module loading (timing itself is not tested)."""

import sys

import pytest


@pytest.fixture(scope="module")
def scan_ab(load_benchmark):
    return load_benchmark("scan_ab")


def test_a_missing_version_file_is_a_usage_error(scan_ab, tmp_path, capsys):
    present = tmp_path / "scan_new.py"
    present.write_text("")
    with pytest.raises(SystemExit) as err:
        scan_ab.main([str(tmp_path / "scan_old.py"), str(present)])
    assert err.value.code == 2
    assert "no such file" in capsys.readouterr().err


def test_a_version_is_loaded_under_its_file_name(scan_ab, tmp_path):
    # numba's disk cache imports a cached kernel's module by name, so the module must be registered
    path = tmp_path / "scan_version_x.py"
    path.write_text("VALUE = 41 + 1\n")
    try:
        module = scan_ab._load(str(path))
        assert module.VALUE == 42
        assert sys.modules["scan_version_x"] is module
    finally:
        sys.modules.pop("scan_version_x", None)
