"""aiserve-vision's OCR steps against RapidOCR's own (PyPI rapidocr-onnxruntime 1.4.4, the
PP-OCR pipeline whose networks the ONNX checks serve), on pictures rendered here with real fonts.

    python tests/clients/ocr_steps_check.py OCR_STEPS_BIN FONTS_DIR

OCR_STEPS_BIN is `crates/vision/examples/ocr_steps` built in release; FONTS_DIR holds Debian's
DejaVu and WenQuanYi Zen Hei fonts (.ci/fetch-fonts.sh). For each picture (Latin and Chinese
lines of several sizes, a multi-line paragraph, light on dark, a rotated line):
- boxes: RapidOCR's detector map through aiserve-vision's DB post-processing gives RapidOCR's
  boxes, one for one (IoU >= 0.8 each; the pixels are expected to be the same);
- crops: aiserve-vision's straightened crops of those boxes equal OpenCV's warpPerspective's
  (opencv-python 5.1) but for at most 1% of values off by one, and read by RapidOCR's angle
  classifier and recogniser give RapidOCR's texts line for line;
- CTC: the recogniser's scores of RapidOCR's own run, decoded by aiserve-vision, give its texts
  and confidences (within 1e-5);
- resizing: the picture at the detector's input size, and each line crop at the recogniser's
  48-pixel height, resized by aiserve-vision equal OpenCV's `resize` byte for byte;
- network inputs: the detector's tensor, and each line as the angle classifier (48x192) and the
  recogniser (48 x its batch's width) take it, equal RapidOCR's float for float;
- fitting whole pictures (scaled into 30..2000 pixels a side, strips letterboxed): a big page, a
  one-line strip and a tiny label fitted by aiserve-vision equal RapidOCR's, pixels and ratios.
"""
import os
import subprocess
import sys
import tempfile

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from rapidocr_onnxruntime import RapidOCR
from shapely.geometry import Polygon


def pictures(fonts):
    sans = lambda size, bold=False: ImageFont.truetype(os.path.join(fonts, "dejavu", "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"), size)
    zh = lambda size: ImageFont.truetype(os.path.join(fonts, "wqy", "wqy-zenhei.ttc"), size)
    a = Image.new("RGB", (640, 420), "white")
    d = ImageDraw.Draw(a)
    d.text((20, 20), "Serving models is fun", font=sans(36), fill="black")
    d.text((30, 90), "aiserve reads 12 lines, 3 sizes.", font=sans(22), fill="black")
    d.rectangle((0, 300, 640, 420), fill="black")
    d.text((40, 330), "Light on dark 2026", font=sans(30, bold=True), fill="white")
    line = Image.new("RGBA", (360, 50), (255, 255, 255, 0))
    ImageDraw.Draw(line).text((5, 5), "A rotated line here", font=sans(28), fill="black")
    line = line.rotate(12, expand=True)
    a.paste(line, (200, 160), line)
    b = Image.new("RGB", (720, 480), (250, 248, 240))
    d = ImageDraw.Draw(b)
    d.text((30, 30), "今天天气很好", font=zh(40), fill="black")
    d.text((30, 100), "模型服务与文字识别", font=zh(28), fill=(30, 30, 90))
    paragraph = ["The quick brown fox jumps over", "the lazy dog near the river bank,", "then reads a book in the shade."]
    for i, text in enumerate(paragraph):
        d.text((30, 180 + 36 * i), text, font=sans(24), fill="black")
    d.text((30, 330), "价格 128 元", font=zh(34), fill="black")
    d.text((360, 400), "Small print 7", font=sans(16), fill="black")
    return {"latin": a, "mixed": b}


def main():
    binary, fonts = sys.argv[1:3]
    eng = RapidOCR()
    characters = eng.text_rec.postprocess_op.character[1:-1]  # without the blank and the space
    worst_iou, lines, rows, resized, prepared, crop_diffs = 1.0, 0, 0, 0, 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        chars_file = os.path.join(tmp, "characters.txt")
        with open(chars_file, "w", encoding="utf-8") as f:
            f.write("\n".join(characters) + "\n")
        for name, picture in pictures(fonts).items():
            path = os.path.join(tmp, f"{name}.png")
            picture.save(path)
            img = cv2.imread(path)
            # The reference pipeline (detector, crops, angle classifier, recogniser; no filtering
            # by confidence), capturing the recogniser's raw scores on the way.
            dt_boxes, _ = eng.text_det(img)
            assert dt_boxes is not None and len(dt_boxes), f"{name}: RapidOCR found no text"
            dt_boxes = eng.sorted_boxes(dt_boxes)
            ref_crops, _, _ = eng.text_cls(eng.get_crop_img_list(img, dt_boxes))
            captured = []
            decode = eng.text_rec.postprocess_op

            def spy(preds, *args, **kwargs):
                captured.append(preds.copy())
                return decode(preds, *args, **kwargs)

            eng.text_rec.postprocess_op = spy
            try:
                want_texts = [t for t, _ in eng.text_rec(ref_crops)[0]]
            finally:
                eng.text_rec.postprocess_op = decode
            want_boxes = [np.array(b, np.float64) for b in dt_boxes]

            # Boxes from the same detector map.
            det = eng.text_det
            x = det.get_preprocess(max(img.shape[:2]))(img)
            prob = det.infer(x)[0]
            map_file = os.path.join(tmp, f"{name}.f32")
            prob[0, 0].astype("<f4").tofile(map_file)
            crops_dir = os.path.join(tmp, f"{name}_crops")
            os.makedirs(crops_dir)
            out = subprocess.run(
                [binary, "boxes", map_file, str(prob.shape[2]), str(prob.shape[3]), path, crops_dir], check=True, capture_output=True, text=True
            ).stdout.splitlines()
            got_boxes = [np.array([[float(v) for v in p.split(",")] for p in line.split()[:4]]) for line in out]
            assert len(got_boxes) == len(want_boxes), f"{name}: {len(got_boxes)} boxes, RapidOCR {len(want_boxes)}: {got_boxes} vs {want_boxes}"
            for g, w in zip(got_boxes, want_boxes):
                pg, pw = Polygon(g), Polygon(w)
                iou = pg.intersection(pw).area / pg.union(pw).area
                assert iou >= 0.8, f"{name}: box {g.tolist()} vs RapidOCR's {w.tolist()}: IoU {iou:.3f}"
                worst_iou = min(worst_iou, iou)

            # Resizing as OpenCV resizes: up to the detector's size, and each line down or up to 48 high.
            sizes = [(path, x.shape[2], x.shape[3])]
            for i, crop in enumerate(ref_crops):
                crop_path = os.path.join(tmp, f"{name}_ref{i}.png")
                cv2.imwrite(crop_path, crop)
                sizes.append((crop_path, 48, max(1, round(48 * crop.shape[1] / crop.shape[0]))))
            for src, h, w in sizes:
                out_path = os.path.join(tmp, "resized.png")
                subprocess.run([binary, "resize", src, str(h), str(w), out_path], check=True)
                want = cv2.resize(cv2.imread(src), (w, h))
                got = cv2.imread(out_path)
                assert got.shape == want.shape and (got == want).all(), f"{src} to {h}x{w}: {int((got != want).sum())} bytes differ"
                resized += 1

            # Network inputs, float for float.
            tensor_file = os.path.join(tmp, "input.f32")
            size = subprocess.run([binary, "det_input", path, tensor_file], check=True, capture_output=True, text=True).stdout.split()
            got = np.fromfile(tensor_file, "<f4").reshape(x.shape)
            assert [int(v) for v in size] == list(x.shape[2:]) and np.array_equal(got, x), f"{name}: detector input differs"
            inputs = 1
            max_ratio = max([320 / 48] + [c.shape[1] / c.shape[0] for c in ref_crops])
            for i, crop in enumerate(ref_crops):
                crop_path = os.path.join(tmp, f"{name}_ref{i}.png")
                for want, width in ((eng.text_cls.resize_norm_img(crop), 192), (eng.text_rec.resize_norm_img(crop, max_ratio), int(48 * max_ratio))):
                    subprocess.run([binary, "line_input", crop_path, "48", str(width), tensor_file], check=True)
                    got = np.fromfile(tensor_file, "<f4").reshape(want.shape)
                    assert np.array_equal(got, want), f"{name}: line {i} at width {width} differs by {np.abs(got - want).max()}"
                    inputs += 1
            prepared += inputs

            # Our crops through RapidOCR's classifier and recogniser.
            crops = [cv2.imread(os.path.join(crops_dir, f"crop{i}.png")) for i in range(len(got_boxes))]
            # The crops are OpenCV's warpPerspective's, but for a few pixels of skewed boxes.
            for i, (ours, theirs) in enumerate(zip(crops, eng.get_crop_img_list(img, dt_boxes))):
                assert ours.shape == theirs.shape, f"{name}: crop {i} is {ours.shape}, OpenCV's {theirs.shape}"
                diff = np.abs(ours.astype(int) - theirs.astype(int))
                assert diff.max() <= 1 and (diff > 0).mean() <= 0.01, f"{name}: crop {i} differs from OpenCV's in {int((diff > 0).sum())} values, by up to {diff.max()}"
                crop_diffs = max(crop_diffs, int((diff > 0).sum()))
            crops, _, _ = eng.text_cls(crops)
            texts = [t for t, _ in eng.text_rec(crops)[0]]
            assert texts == want_texts, f"{name}: read {texts}, RapidOCR {want_texts}"
            lines += len(texts)

            # Our CTC on RapidOCR's own recogniser scores.
            for preds in captured:
                scores_file = os.path.join(tmp, "scores.f32")
                preds.astype("<f4").tofile(scores_file)
                n, t, c = preds.shape
                ours = subprocess.run([binary, "ctc", scores_file, str(n), str(t), str(c), chars_file], check=True, capture_output=True, text=True).stdout
                ours = [line.split("\t", 1) for line in ours.split("\n")[:n]]
                for (conf, text), (want_text, want_conf) in zip(ours, decode(preds)):
                    assert text == want_text and abs(float(conf) - want_conf) <= 1e-5, (text, conf, want_text, want_conf)
                    rows += 1
            print(f"{name}: {len(texts)} lines {want_texts}")
        # Whole pictures fitted for detection.
        fitted = 0
        sans = ImageFont.truetype(os.path.join(fonts, "dejavu", "DejaVuSans.ttf"), 28)
        for size in ((2400, 1000), (900, 40), (200, 20), (640, 420)):
            im = Image.new("RGB", size, "white")
            ImageDraw.Draw(im).text((4, 2), "Fit me 123", font=sans, fill="black")
            path = os.path.join(tmp, "fit_in.png")
            im.save(path)
            img = cv2.imread(path)
            want, ratio_h, ratio_w = eng.preprocess(img)
            want, record = eng.maybe_add_letterbox(want, {})
            out_path = os.path.join(tmp, "fit_out.png")
            got_ratios = subprocess.run([binary, "fit", path, out_path], check=True, capture_output=True, text=True).stdout.split()
            got = cv2.imread(out_path)
            assert got.shape == want.shape and (got == want).all(), f"{size}: fitted {got.shape} vs RapidOCR {want.shape}"
            assert [float(v) for v in got_ratios] == [ratio_h, ratio_w, record["padding_1"]["top"]], (size, got_ratios, ratio_h, ratio_w, record)
            fitted += 1
    print(
        f"aiserve-vision equals RapidOCR 1.4.4: {fitted} pictures fitted, {lines} lines' boxes (IoU >= {worst_iou:.3f}) and texts from our crops "
        f"(at most {crop_diffs} values of a crop off by one from OpenCV's), "
        f"{rows} CTC rows; {resized} resizes equal OpenCV's byte for byte, {prepared} network inputs RapidOCR's float for float"
    )


if __name__ == "__main__":
    main()
