"""Print the versions a test leg runs on, one line: `python ci/versions.py LABEL`."""

import platform
import sys
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("torch", "transformers", "tokenizers", "huggingface-hub", "sentence-transformers", "trl", "datasets",
            "accelerate", "onnx", "onnxscript", "onnxruntime", "openvino", "numpy", "pyarrow")


def installed(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


print(f"{sys.argv[1]}: python {platform.python_version()}, " + ", ".join(f"{n} {installed(n)}" for n in PACKAGES))
