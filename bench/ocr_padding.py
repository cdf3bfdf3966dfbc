"""How much PP-OCR's recogniser reading depends on the width its line is padded to (a design
input for batching lines across requests): each line of tests/clients/ocr_steps_check.py's
pictures, as RapidOCR 1.4.4 crops it, read alone at other padded widths (its own proportions,
480, 960 and 1920 pixels) against RapidOCR's own batched reading.

    python bench/ocr_padding.py FONTS_DIR     # the client venv (tests/clients/run.sh makes it)
"""
import os
import sys

import cv2
import numpy as np
from rapidocr_onnxruntime import RapidOCR

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "clients"))
from ocr_steps_check import pictures  # noqa: E402


def main():
    eng = RapidOCR()
    rec = eng.text_rec
    total, differ, worst = 0, 0, 0.0
    for name, picture in pictures(sys.argv[1]).items():
        img = cv2.cvtColor(np.asarray(picture), cv2.COLOR_RGB2BGR)
        boxes, _ = eng.text_det(img)
        crops, _, _ = eng.text_cls(eng.get_crop_img_list(img, eng.sorted_boxes(boxes)))
        reference = rec(crops)[0]
        for i, crop in enumerate(crops):
            own = crop.shape[1] / crop.shape[0]
            for ratio in (max(320 / 48, own), 10.0, 20.0, 40.0):
                if ratio < own:
                    continue
                x = rec.resize_norm_img(crop, ratio)[None].astype(np.float32)
                text, score = rec.postprocess_op(rec.session(x)[0])[0]
                total += 1
                worst = max(worst, abs(score - reference[i][1]))
                if text != reference[i][0]:
                    differ += 1
                    print(f"{name} line {i} padded to {int(48 * ratio)}: {text!r}, RapidOCR {reference[i][0]!r}")
    print(f"{total} readings at other padded widths: {differ} texts differ, confidence moves up to {worst:.4f}")


if __name__ == "__main__":
    main()
