"""algnet.sysinfo: the CPU model and vector ISA printed beside benchmark figures."""

import platform

import pytest

from algnet.sysinfo import cpu_info, describe_cpu, parse_cpuinfo, vector_isa

# Abridged /proc/cpuinfo of real machines: an AVX2-only AMD EPYC VM, an AVX-512 Xeon, an Arm server.
EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni avx512f
"""
XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse4_2 avx avx2 avx512f avx512dq avx512bw avx512vl amx_tile
"""
GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid sve
CPU implementer\t: 0x41
"""


@pytest.mark.parametrize("text,model,isa", [(EPYC, "AMD EPYC 7B13", "AVX2"), (XEON, "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", "AVX-512"),
                                            (GRAVITON, None, "SVE")])
def test_parse_and_isa(text, model, isa):
    name, flags = parse_cpuinfo(text)
    assert name == model and vector_isa(flags) == isa  # the first processor's flags, not a later one's


def test_isa_order():
    assert vector_isa({"sse4_2", "avx"}) == "AVX" and vector_isa({"asimd"}) == "NEON" and vector_isa(set()) == "unknown"


def test_this_machine_agrees_with_llvm():
    """/proc/cpuinfo and LLVM's host features are independent reports of the same CPU."""
    llvm = pytest.importorskip("llvmlite.binding")
    host = {name for name, on in llvm.get_host_cpu_features().items() if on}
    info = cpu_info()
    assert info["isa"] == vector_isa(host) and info["llvm_cpu"] == llvm.get_host_cpu_name()
    assert info["isa"] in describe_cpu() and info["cpu"] in describe_cpu()


def test_without_proc_cpuinfo_falls_back_to_llvm(tmp_path):
    llvm = pytest.importorskip("llvmlite.binding")
    info = cpu_info(tmp_path / "missing")
    assert info["isa"] == vector_isa({n for n, on in llvm.get_host_cpu_features().items() if on})
    assert info["cpu"] in (platform.processor(), llvm.get_host_cpu_name())
