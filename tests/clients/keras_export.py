"""A Keras 3 CNN trained here and exported the way Keras users export for serving:
`model.export(path, format="onnx")` (Keras 3 on TensorFlow, through tf2onnx). Runs in its own
virtual environment (TensorFlow's protobuf differs from tritonclient's); the check that drives
aiserve is `keras_model` in onnx_check.py.

    python tests/clients/keras_export.py MNIST_DIR MODEL_DIR REFERENCE.npz

Trains a small CNN (Conv2D, MaxPooling2D, BatchNormalization, Flatten, Dropout, Dense + softmax;
NHWC [N,28,28,1] in [0, 1]) for two epochs on the first 6,000 MNIST training digits from a fixed
seed, writes MODEL_DIR/1/model.onnx, labels.txt and MODEL_DIR/model.toml
(`[onnx.image]`, GRAY, NHWC), the version appearing whole; REFERENCE.npz holds 64 test digits,
Keras's own `predict` on them, their labels and the graph's operators.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from mnist import mnist_test  # noqa: E402


def main():
    mnist_dir, model_dir, reference = sys.argv[1:4]
    keras.utils.set_random_seed(16)
    x, y = mnist_test(mnist_dir, 6000, part="train")
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1), name="image"),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.BatchNormalization(),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    version = os.path.join(model_dir, "1")
    os.makedirs(version + ".tmp")
    model.export(os.path.join(version + ".tmp", "model.onnx"), format="onnx", verbose=False)
    graph = onnx.load(os.path.join(version + ".tmp", "model.onnx"))
    with open(os.path.join(version + ".tmp", "labels.txt"), "w") as f:
        f.write("\n".join(str(d) for d in range(10)) + "\n")
    with open(os.path.join(model_dir, "model.toml"), "w") as f:
        f.write('[onnx.image]\nlayout = "NHWC"\nchannels = "GRAY"\nlabels = "labels.txt"\n')
    test_x, test_y = mnist_test(mnist_dir, 64)
    ops = sorted({n.op_type for n in graph.graph.node})
    opsets = [f"{o.domain or 'ai.onnx'} {o.version}" for o in graph.opset_import]
    np.savez(reference, x=test_x, y=test_y, keras=model.predict(test_x, verbose=0), ops=np.array(ops), opsets=np.array(opsets), version=np.array(keras.__version__))
    os.rename(version + ".tmp", version)


if __name__ == "__main__":
    main()
