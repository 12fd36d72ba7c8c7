"""tools/mkl_shim.py: when torch's MKL needs the shim, building it, and a process that runs with it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))
import mkl_shim as cpu_blas  # noqa: E402

AVX512_FLAGS = "fpu sse avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512cd"


def cpuinfo(tmp_path, vendor: str, flags: str):
    path = tmp_path / f"cpuinfo_{vendor}"
    cpu = f"processor\t: 0\nvendor_id\t: {vendor}\nmodel name\t: test\nflags\t\t: {flags}\n\n"
    path.write_text(cpu + cpu.replace(": 0", ": 1"))
    return str(path)


@pytest.fixture
def x86_mkl_torch(monkeypatch):
    """The checks that depend on this machine's torch build and architecture, fixed to an x86-64 MKL build."""
    monkeypatch.setattr(cpu_blas.sys, "platform", "linux")
    monkeypatch.setattr(cpu_blas.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.mkl, "is_available", lambda: True)
    monkeypatch.setattr(cpu_blas, "shim_loaded", lambda: False)


def test_slow_path_only_on_non_intel_avx512(tmp_path, x86_mkl_torch):
    reason = cpu_blas.slow_mkl_reason(cpuinfo(tmp_path, "AuthenticAMD", AVX512_FLAGS))
    assert reason is not None and "AuthenticAMD" in reason and "LD_PRELOAD" in reason
    assert cpu_blas.slow_mkl_reason(cpuinfo(tmp_path, "GenuineIntel", AVX512_FLAGS)) is None
    assert cpu_blas.slow_mkl_reason(cpuinfo(tmp_path, "AuthenticAMD", "fpu sse avx avx2 fma avx512f")) is None
    assert cpu_blas.slow_mkl_reason(str(tmp_path / "missing")) is None


def test_not_needed_without_mkl_or_with_the_shim(tmp_path, x86_mkl_torch, monkeypatch):
    amd = cpuinfo(tmp_path, "AuthenticAMD", AVX512_FLAGS)
    monkeypatch.setattr(cpu_blas, "shim_loaded", lambda: True)
    assert cpu_blas.slow_mkl_reason(amd) is None
    monkeypatch.setattr(cpu_blas, "shim_loaded", lambda: False)
    monkeypatch.setattr(torch.backends.mkl, "is_available", lambda: False)
    assert cpu_blas.slow_mkl_reason(amd) is None
    monkeypatch.setattr(torch.backends.mkl, "is_available", lambda: True)
    monkeypatch.setattr(cpu_blas.platform, "machine", lambda: "aarch64")
    assert cpu_blas.slow_mkl_reason(amd) is None


def test_build_without_a_compiler_names_what_it_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("CC", "no-such-compiler")
    with pytest.raises(cpu_blas.CPUBlasError, match=r"needs a C compiler: none of \$CC, cc, gcc, clang"):
        cpu_blas.build_shim(tmp_path / "shim")
    assert not (tmp_path / "shim" / cpu_blas.SHIM_NAME).exists()


def test_cli_rejects_unknown_arguments(capsys):
    assert cpu_blas.main(["--bogus"]) == 2
    assert "usage: python tools/mkl_shim.py [--status]" in capsys.readouterr().err


PROBE = f"""
import json, sys, torch
sys.path.insert(0, {str(TOOLS)!r})
import mkl_shim as cpu_blas
torch.manual_seed(0)
a, w = torch.randn(2112, 256), torch.randn(256, 256)
print(json.dumps({{"loaded": cpu_blas.shim_loaded(), "reason": cpu_blas.slow_mkl_reason(),
                  "product": (a @ w).tolist()}}))
"""


@pytest.mark.skipif(not any(shutil.which(c) for c in ("cc", "gcc", "clang")), reason="no C compiler on PATH")
def test_a_process_with_the_shim_preloaded_uses_it_and_computes_the_same_products(tmp_path):
    shim = cpu_blas.build_shim(tmp_path)
    assert shim == tmp_path / cpu_blas.SHIM_NAME and shim.is_file()
    assert cpu_blas.build_shim(tmp_path) == shim  # built once: the second call finds it

    def probe(preload):
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        env.update({"LD_PRELOAD": str(preload)} if preload else {})
        out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    plain, shimmed = probe(None), probe(shim)
    assert not plain["loaded"] and shimmed["loaded"] and shimmed["reason"] is None
    # other kernels sum in another order: equal to float32 rounding of a 256-term dot product, not bit for bit
    torch.testing.assert_close(torch.tensor(shimmed["product"]), torch.tensor(plain["product"]), rtol=1e-4,
                               atol=1e-4)
