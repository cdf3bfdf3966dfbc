"""OCR throughput and latency: aiserve's PP-OCR pipeline (pipelines/pp-ocr.toml) against
RapidOCR's own Python API (rapidocr-onnxruntime 1.4.4 on onnxruntime, its defaults), on the
same pictures, with 1 and 8 concurrent clients, side by side in one run.

    python bench/ocr_vs_rapidocr.py HTTP_ADDR FONTS_DIR [SECONDS] [CLIENTS]

HTTP_ADDR serves `ocr` as tests/clients/run.sh sets it up (see bench/ocr_vs_rapidocr.sh). The
pictures are tests/clients/ocr_check.py's (Latin and Chinese pages, an upside-down page, a
strip), cycled. RapidOCR's clients are threads calling one engine (onnxruntime runs outside
the GIL); aiserve's are threads posting PNGs to /ocr over keep-alive connections. Each side
runs alone, for SECONDS (default 20) per concurrency (CLIENTS, default `1,8`) after a warm-up; pictures/s and p50/p90
latency are printed, and the ratios."""
import http.client
import importlib.util
import io
import json
import os
import statistics
import sys
import threading
import time

from rapidocr_onnxruntime import RapidOCR

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("ocr_check", os.path.join(here, "..", "tests", "clients", "ocr_check.py"))
ocr_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ocr_check)


def run(call, clients, seconds, pictures):
    lat, lock, stop = [], threading.Lock(), time.time() + seconds

    def client(i):
        n = i
        while time.time() < stop:
            t0 = time.time()
            call(pictures[n % len(pictures)])
            with lock:
                lat.append(time.time() - t0)
            n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.time() - t0
    lat.sort()
    return len(lat) / took, statistics.median(lat), lat[int(0.9 * (len(lat) - 1))]


def main():
    addr, fonts = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 20
    counts = [int(c) for c in (sys.argv[4] if len(sys.argv) > 4 else "1,8").split(",")]
    sides = os.environ.get("SIDES", "rapidocr,aiserve").split(",")
    pictures = [ocr_check.png(p) for p in ocr_check.pictures(fonts).values()]
    eng = RapidOCR()
    host, port = addr.rsplit(":", 1)
    local = threading.local()

    def rapidocr(data):
        eng(data)

    def aiserve(data):
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(host, int(port), timeout=300)
        local.conn.request("POST", "/ocr", data, {"Content-Type": "image/png"})
        resp = local.conn.getresponse()
        body = resp.read()
        assert resp.status == 200, body
        json.loads(body)

    for data in pictures:  # warm-up, and both read the same lines
        want = [w[1] for w in (eng(data)[0] or [])]
        conn = http.client.HTTPConnection(host, int(port), timeout=300)
        conn.request("POST", "/ocr", data, {"Content-Type": "image/png"})
        got = [l["text"] for l in json.loads(conn.getresponse().read())["lines"]]
        assert got == want, (got, want)
    rows = {}
    for clients in counts:
        for name, call in [(n, c) for n, c in (("rapidocr", rapidocr), ("aiserve", aiserve)) if n in sides]:
            rows[(name, clients)] = run(call, clients, seconds, pictures)
            rate, p50, p90 = rows[(name, clients)]
            print(f"{name:9s} {clients} clients: {rate:6.2f} pictures/s, p50 {p50 * 1000:7.1f} ms, p90 {p90 * 1000:7.1f} ms", flush=True)
        if len(sides) < 2:
            continue
        a, r = rows[("aiserve", clients)], rows[("rapidocr", clients)]
        print(f"aiserve/rapidocr at {clients}: throughput x{a[0] / r[0]:.2f}, p50 x{a[1] / r[1]:.2f}", flush=True)


if __name__ == "__main__":
    main()
