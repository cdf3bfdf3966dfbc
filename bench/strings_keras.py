"""The seed's sequence model in Keras, for bench/strings_vs_keras.sh: the digits CNN's convolution
stack over 28x128 pictures of digit strings, LSTM(latent_dim, return_state=True) over its 28
feature columns, an LSTM decoder started from those states on one-hot inputs (teacher forcing),
Dense(11, softmax); RMSprop, sparse categorical cross-entropy weighted to each string's digits
and end token (what aiserve's loss counts). The strings are composed from the MNIST training
pictures as aiserve composes them (1-6 digits, 18-22 pixels apart, a random start).

Usage: python strings_keras.py MNIST_DIR [--strings 24000] [--fits 2] [--latent 128]
Prints one line per timed fit: `fit N: S s (loss L, token accuracy A)`.
"""
import argparse, gzip, os, time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import keras
from keras import layers

H, W, MAX, TOKENS, START, END = 28, 128, 6, 11, 10, 10


def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def compose(images, labels, count, rng):
    x = np.zeros((count, H, W), np.uint8)
    lengths = rng.integers(1, MAX + 1, count)
    dec_in = np.full((count, MAX + 1), END, np.int32)
    target = np.full((count, MAX + 1), END, np.int32)
    weight = np.zeros((count, MAX + 1), np.float32)
    for s, n in enumerate(lengths):
        widest = min((W - 28) // (n - 1), 22) if n > 1 else 22
        gap = rng.integers(18, widest + 1)
        x0 = rng.integers(0, W - (28 + (n - 1) * gap) + 1)
        picks = rng.integers(0, len(images), n)
        for k, p in enumerate(picks):
            left = x0 + k * gap
            np.maximum(x[s, :, left:left + 28], images[p], out=x[s, :, left:left + 28])
        digits = labels[picks]
        dec_in[s, 0] = START
        dec_in[s, 1:n + 1] = digits
        target[s, :n] = digits
        weight[s, :n + 1] = 1.0
    return x[..., None].astype(np.float32) / 255.0, keras.utils.to_categorical(dec_in, TOKENS), target, weight


def build(latent):
    picture = keras.Input((H, W, 1))
    y = layers.Conv2D(32, 3, activation="relu")(picture)
    y = layers.MaxPooling2D(2)(y)
    y = layers.Conv2D(64, 3, activation="relu")(y)
    y = layers.MaxPooling2D(2)(y)
    y = layers.Conv2D(64, 3, activation="relu")(y)            # (3, 28, 64)
    y = layers.Permute((2, 1, 3))(y)
    y = layers.Reshape((28, 3 * 64))(y)
    _, h, c = layers.LSTM(latent, return_state=True)(y)
    decoder_in = keras.Input((MAX + 1, TOKENS))
    d = layers.LSTM(latent, return_sequences=True)(decoder_in, initial_state=[h, c])
    out = layers.Dense(TOKENS, activation="softmax")(d)
    model = keras.Model([picture, decoder_in], out)
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", weighted_metrics=["accuracy"])
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mnist")
    ap.add_argument("--strings", type=int, default=24000)
    ap.add_argument("--fits", type=int, default=2)
    ap.add_argument("--latent", type=int, default=128)
    a = ap.parse_args()
    images = idx(os.path.join(a.mnist, "train-images-idx3-ubyte.gz"))
    labels = idx(os.path.join(a.mnist, "train-labels-idx1-ubyte.gz"))
    cut = int(round(len(images) * 0.8))
    x, dec_in, target, weight = compose(images[:cut], labels[:cut], a.strings, np.random.default_rng(42))
    keras.utils.set_random_seed(42)
    model = build(a.latent)
    print(f"keras {keras.__version__}, {model.count_params()} parameters, {a.strings} strings, batch 32")
    for i in range(a.fits):
        t0 = time.perf_counter()
        h = model.fit([x, dec_in], target, sample_weight=weight, batch_size=32, epochs=1, verbose=0)
        dt = time.perf_counter() - t0
        print(f"fit {i + 1}: {dt:.1f} s (loss {h.history['loss'][-1]:.4f}, token accuracy {h.history['accuracy'][-1]:.4f})")


if __name__ == "__main__":
    main()
