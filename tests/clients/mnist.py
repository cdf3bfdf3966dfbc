"""MNIST as the client checks use it: the first N images of a set, scaled to [0, 1]."""
import gzip

import numpy as np


def mnist_test(dirname, n, part="t10k"):
    """Images as float32 [n, 28, 28, 1] in [0, 1], and their labels (`part`: t10k or train)."""
    with gzip.open(f"{dirname}/{part}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16)[: n * 784].reshape(n, 28, 28, 1)
    with gzip.open(f"{dirname}/{part}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return images.astype(np.float32) / 255.0, labels
