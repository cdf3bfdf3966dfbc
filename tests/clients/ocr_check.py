"""OCR through the server against RapidOCR's own Python package (PyPI rapidocr-onnxruntime 1.4.4
with onnxruntime), on pictures rendered here with Debian's fonts.

    python tests/clients/ocr_check.py HTTP_ADDR GRPC_ADDR FONTS_DIR

The server serves RapidOCR's three networks as `det`, `cls` and `rec` and the pipeline `ocr`
configured by pipelines/pp-ocr.toml. For every picture (Latin lines of several sizes, light on
dark, a rotated line; Chinese lines and a multi-line paragraph; an upside-down line; a one-line
strip, letterboxed before detection) aiserve's `/ocr` reads the same lines as RapidOCR, line for
line, with boxes overlapping at IoU >= 0.8 and confidences within 1e-3; KServe v2 over HTTP
(binary BYTES picture) and gRPC answer the same texts, boxes and scores as `/ocr`.
"""
import importlib.util
import io
import json
import os
import sys
import urllib.request

import numpy as np
import tritonclient.grpc as tg
import tritonclient.http as th
from PIL import Image, ImageDraw, ImageFont
from rapidocr_onnxruntime import RapidOCR
from shapely.geometry import Polygon


def pictures(fonts):
    spec = importlib.util.spec_from_file_location("steps", os.path.join(os.path.dirname(__file__), "ocr_steps_check.py"))
    steps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(steps)
    out = steps.pictures(fonts)
    sans = ImageFont.truetype(os.path.join(fonts, "dejavu", "DejaVuSans.ttf"), 30)
    upside = Image.new("RGB", (520, 160), "white")
    d = ImageDraw.Draw(upside)
    d.text((20, 20), "Upside down text 42", font=sans, fill="black")
    d.text((20, 90), "Second line here", font=sans, fill="black")
    out["upside_down"] = upside.rotate(180)
    strip = Image.new("RGB", (900, 40), "white")
    ImageDraw.Draw(strip).text((6, 4), "A narrow strip of text, letterboxed", font=sans, fill="black")
    out["strip"] = strip
    return out


def png(picture):
    buf = io.BytesIO()
    picture.save(buf, "PNG")
    return buf.getvalue()


def iou(a, b):
    pa, pb = Polygon(a), Polygon(b)
    return pa.intersection(pb).area / pa.union(pb).area


def main():
    addr, grpc_addr, fonts = sys.argv[1:4]
    eng = RapidOCR()
    http = th.InferenceServerClient(addr)
    grpc = tg.InferenceServerClient(grpc_addr)
    lines, worst, conf = 0, 1.0, 0.0
    for name, picture in pictures(fonts).items():
        data = png(picture)
        want, _ = eng(data)
        want = want or []
        req = urllib.request.Request(f"http://{addr}/ocr", data=data, headers={"Content-Type": "image/png"})
        got = json.load(urllib.request.urlopen(req))["lines"]
        assert [g["text"] for g in got] == [w[1] for w in want], f"{name}: read {[g['text'] for g in got]}, RapidOCR {[w[1] for w in want]}"
        for g, w in zip(got, want):
            overlap = iou(g["polygon"], w[0])
            assert overlap >= 0.8, f"{name}: {g['text']!r} at {g['polygon']}, RapidOCR at {w[0]}: IoU {overlap:.3f}"
            assert abs(g["confidence"] - w[2]) <= 1e-3, f"{name}: {g['text']!r} confidence {g['confidence']} vs {w[2]}"
            worst = min(worst, overlap)
            conf = max(conf, abs(g["confidence"] - w[2]))
        lines += len(got)

        # KServe v2: the picture as one BYTES element, binary over HTTP and over gRPC.
        i = th.InferInput("picture", [1], "BYTES")
        i.set_data_from_numpy(np.array([data], dtype=object), binary_data=True)
        r = http.infer("ocr", [i])
        i = tg.InferInput("picture", [1], "BYTES")
        i.set_data_from_numpy(np.array([data], dtype=object))
        s = grpc.infer("ocr", [i])
        for via, res in (("http", r), ("grpc", s)):
            texts = [t.decode() for t in res.as_numpy("texts")]
            assert texts == [g["text"] for g in got], f"{name} over KServe {via}: {texts}"
            boxes = res.as_numpy("boxes")
            assert boxes.shape == (len(got), 4, 2) and np.array_equal(boxes, np.array([g["polygon"] for g in got], np.float32).reshape(-1, 4, 2)), f"{name} over KServe {via}: boxes differ"
            assert np.array_equal(res.as_numpy("scores"), np.array([g["confidence"] for g in got], np.float32)), f"{name} over KServe {via}: scores differ"
        print(f"{name}: {[g['text'] for g in got]}")
    # A picture with no text reads no lines; one that is not a picture is refused, naming the step.
    blank = png(Image.new("RGB", (300, 200), "white"))
    req = urllib.request.Request(f"http://{addr}/ocr", data=blank, headers={"Content-Type": "image/png"})
    assert json.load(urllib.request.urlopen(req))["lines"] == []
    try:
        i = th.InferInput("picture", [1], "BYTES")
        i.set_data_from_numpy(np.array([b"not a picture"], dtype=object), binary_data=True)
        http.infer("ocr", [i])
        raise AssertionError("a non-picture was read")
    except th.InferenceServerException as e:
        assert "pipeline step `decode`" in str(e) and e.status() == "400", e
    print(f"aiserve's OCR pipeline reads RapidOCR 1.4.4's {lines} lines line for line (IoU >= {worst:.3f}, confidences within {conf:.4f}), over /ocr, KServe HTTP and gRPC")


if __name__ == "__main__":
    main()
