"""Installs the pix2seq_d2 package (detectron2 itself is installed separately: see docs/install.md).

The configs (the repository's top-level ``configs/`` folder) ship inside the package as
``pix2seq_d2/model_zoo/configs``: a committed symlink to ``../../configs`` in the source tree, copied as
files into wheels and non-editable installs by ``package_data`` (``pix2seq_d2.model_zoo.get_config_file``).
"""

from setuptools import find_packages, setup

EXPORT_REQUIRES = ["onnx", "onnxruntime", "onnxscript"]

setup(
    name="pix2seq_d2",
    version="0.1.0",
    description="Pix2Seq (a language modeling framework for object detection) as a Detectron2 extension",
    packages=find_packages(include=["pix2seq_d2", "pix2seq_d2.*"]),
    package_data={"pix2seq_d2.model_zoo": ["configs/*.yaml", "configs/**/*.yaml", "configs/**/*.py"]},
    python_requires=">=3.10",
    install_requires=[
        # detectron2's own runtime dependencies (the PyPI build is installed without them)
        "Pillow",
        "matplotlib",
        "pycocotools",
        "termcolor",
        "yacs",
        "tabulate",
        "cloudpickle",
        "tqdm",
        "tensorboard",
        "fvcore",
        "iopath",
        "omegaconf>=2.1,<2.4",
        "hydra-core",
        "black",
        "packaging",
        "opencv-python-headless",
        # C++ COCO evaluation, same numbers as pycocotools (TEST.COCO_EVAL_BACKEND; pix2seq_d2/evaluation)
        "faster-coco-eval",
        # `from detectron2 import model_zoo` needs pkg_resources, which setuptools 81 removed
        "setuptools<81",
        # detectron2's tools/benchmark.py (and ours) report memory with it
        "psutil",
    ],
    extras_require={
        # tools/export_model.py: ONNX export (torch's exporter needs onnxscript) and the ONNX Runtime runner
        "export": EXPORT_REQUIRES,
        "dev": ["pytest", "ruff", *EXPORT_REQUIRES],
    },
)
