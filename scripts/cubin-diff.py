#!/usr/bin/env python3
"""Machine code of kernel sources without a GPU: compiles .cu files with NVRTC (the library that
scripts/fetch-test-data.sh fetches; the same options as KilnGPU's KernelCompiler) and prints, per file,
the SHA-256 of the cubin's SASS text sections (.text.<kernel>), one line per kernel. A refactor that
claims "same machine code" shows the same hashes before and after:
    python3 scripts/cubin-diff.py gemm_splitk.cu > before.txt ; (edit) ; ... > after.txt ; diff before.txt after.txt
Template kernels are compiled only when named: FILE.cu@NAME[@NAME...], e.g. rope_cache.cu@kiln::rope_qkv_cache<0>.
Only the kernel code is hashed, not the whole cubin: symbol tables and section order may move when a
helper changes files while the instructions stay the same.
"""
import ctypes, glob, hashlib, os, struct, sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Sources", "KilnKernels", "cuda")
home = os.environ.get("KILN_HOME", os.path.expanduser("~/.cache/kiln"))
arch = os.environ.get("ARCH", "sm_90a")
libdir = os.path.join(home, "nvrtc/nvidia/cu13/lib")
ctypes.CDLL(os.path.join(libdir, "libnvrtc-builtins.so.13.0"), mode=ctypes.RTLD_GLOBAL)   # NVRTC dlopens it by name
lib = ctypes.CDLL(os.path.join(libdir, "libnvrtc.so.13"))

def check(what, rc, prog=None):
    if rc != 0:
        log = ""
        if prog is not None:
            n = ctypes.c_size_t(); lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
            buf = ctypes.create_string_buffer(n.value); lib.nvrtcGetProgramLog(prog, buf); log = buf.value.decode()
        sys.exit(f"{what} failed ({rc}):\n{log}")

def compile_cubin(path, instances=()):
    headers = sorted(glob.glob(os.path.join(root, "common", "*.cuh")))
    texts = [open(h, "rb").read() for h in headers]
    names = [os.path.basename(h).encode() for h in headers]
    prog = ctypes.c_void_p()
    arr = lambda xs: (ctypes.c_char_p * len(xs))(*xs)
    check("nvrtcCreateProgram", lib.nvrtcCreateProgram(ctypes.byref(prog), open(path, "rb").read(),
          os.path.basename(path).encode(), len(headers), arr(texts), arr(names)))
    for name in instances: check("nvrtcAddNameExpression " + name, lib.nvrtcAddNameExpression(prog, name.encode()))
    opts = [f"--gpu-architecture={arch}".encode(), b"-std=c++17", b"-default-device"]
    check("nvrtcCompileProgram " + path, lib.nvrtcCompileProgram(prog, len(opts), arr(opts)), prog)
    n = ctypes.c_size_t(); check("nvrtcGetCUBINSize", lib.nvrtcGetCUBINSize(prog, ctypes.byref(n)))
    buf = ctypes.create_string_buffer(n.value); check("nvrtcGetCUBIN", lib.nvrtcGetCUBIN(prog, buf))
    return buf.raw

def text_sections(elf):
    """(name, bytes) of every .text.* section of a 64-bit little-endian ELF."""
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    secs = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    strtab = secs[shstrndx]
    name = lambda off: elf[strtab[4] + off: elf.index(b"\0", strtab[4] + off)].decode()
    return [(name(s[0]), elf[s[4]: s[4] + s[5]]) for s in secs if name(s[0]).startswith(".text.")]

for arg in sys.argv[1:] or sorted(os.path.basename(p) for p in glob.glob(os.path.join(root, "*.cu"))):
    f, *instances = arg.split("@")
    for sec, code in sorted(text_sections(compile_cubin(os.path.join(root, f), instances))):
        print(f"{f} {sec[6:]} {len(code)} {hashlib.sha256(code).hexdigest()[:16]}")
