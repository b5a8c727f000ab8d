"""bert_tf: BERT pre-training and fine-tuning on TensorFlow 2 / Keras 3.

The stack is pinned as in DESIGN.md. Horovod is not an install requirement: it must be built from
source against the installed TensorFlow (`make horovod`, see the README).
"""

from setuptools import find_packages, setup

setup(
    name="bert_tf",
    version="0.1.0",
    description="BERT pre-training and fine-tuning on TensorFlow 2 / Keras 3, "
                "checkpoint-compatible with Google's and Hugging Face's BERT",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["bert_tf", "bert_tf.*"]),
    install_requires=[
        "tensorflow==2.18.*",
        "keras>=3.8,<4",
        "tensorflow-text==2.18.*",
        "absl-py",
        "sentencepiece",
        "numpy",
        "safetensors",
        "tqdm",
        "google-crc32c",  # TFRecord CRCs in create_pretraining_data's TensorFlow-free workers
        "blingfire",  # sentence splitting (create_pretraining_data --input_format=paragraphs)
        "scikit-learn",  # GLUE metrics (bert_tf.metrics)
        "scipy",  # STS-B correlations
        "seqeval",  # CoNLL entity chunks, conlleval's rules
        "pooch",  # preset and GLUE downloads: SHA-256 checks, atomic writes (bert_tf.downloads)
        "filelock",  # one download when processes share a cache
        # MLflow tracking (bert_tf.training.tracking) into a SQLite store by default: the client
        # without the UI, plus what its SQL store needs. `mlflow ui` needs the "tracking" extra.
        "mlflow-skinny",
        "sqlalchemy",
        "alembic",
        "pyyaml",  # search-space files (bert_tf.sweeps)
        "optuna",  # local sweeps (bert_tf.tune)
        "matplotlib",  # sweep plots
        # prepare_corpus.py: MediaWiki markup, Parquet input, near-duplicate MinHash LSH
        "mwparserfromhell>=0.6",
        "pyarrow",
        "datasketch>=2.0",
    ],
    extras_require={
        # Test and benchmark peers: never imported by the library.
        "test": [
            "pytest",
            "torch==2.13.0",  # CPU build; the machine image ships this wheel
            "transformers<5",
            # Google's own BERT scripts (run_squad.py, ...) as the parity oracle, pure Python;
            # the tests run them in a subprocess.
            "bert-tensorflow==1.0.4",
            # azure/submit.py's --dry-run is tested offline against the SDK itself.
            "azure-ai-ml",
            "azure-identity",
            # export_model.py --export=onnx is tested end to end in onnxruntime.
            "tf2onnx==1.17.*",
            "onnx>=1.16,<1.23",  # 1.23 needs protobuf 6, which TensorFlow 2.18 refuses
            "onnxruntime",
        ],
        "tracking": ["mlflow"],  # the full package, with `mlflow ui`
        # export_model.py --export=onnx (tf2onnx) and running the result (onnxruntime).
        "onnx": ["tf2onnx==1.17.*", "onnx>=1.16,<1.23", "onnxruntime"],
        "azure": ["azure-ai-ml", "azure-identity", "mlflow", "azureml-mlflow"],
    },
)
