#!/usr/bin/env python3
"""Dequantizes raw GGML blocks with the `gguf` package (llama.cpp's Python reference), for Kiln's bit-exact tests.

Usage: gguf-dequantize.py TYPE IN OUT   (TYPE a GGMLQuantizationType name such as Q4_K; IN raw blocks; OUT little-endian
float32 values). Run with PYTHONPATH=$KILN_HOME/python, where scripts/fetch-test-data.sh installs gguf and numpy.
"""
import sys

import numpy as np
from gguf import GGMLQuantizationType, quants

qtype = GGMLQuantizationType[sys.argv[1]]
blocks = np.fromfile(sys.argv[2], dtype=np.uint8)
values = quants.dequantize(blocks, qtype).astype("<f4", copy=False)
values.tofile(sys.argv[3])
