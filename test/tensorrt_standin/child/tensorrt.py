"""STAND-IN `tensorrt` for a child process (a node started by a test).

With this folder first on PYTHONPATH, `import tensorrt` gives the stand-in of trt.py (version
from $TENSORRT_STANDIN_VERSION, default 10.3.0) and installs the stand-in CUDA runtime as
`cuda.bindings.runtime`, as `tensorrt_standin.install` does inside the test process.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tensorrt_standin import install_into_process  # noqa: E402

sys.modules[__name__] = install_into_process(os.environ.get('TENSORRT_STANDIN_VERSION',
                                                            '10.3.0'))
