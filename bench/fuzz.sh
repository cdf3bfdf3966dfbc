#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets: JSON tensors, KServe BYTES, gRPC tensors, PNG/JPEG, OCR steps, IDX,
# request grammars and tool-call parsing,
# safetensors, GGUF headers and tokenizers, config files) for SECONDS each with libFuzzer through cargo-fuzz; exits non-zero
# on the first crash (the reproducer lands in fuzz/artifacts/<target>/).
#   bench/fuzz.sh [SECONDS]        # default 10; CI runs the default, longer runs go in the notes
# The machines have one stable toolchain; cargo-fuzz passes -Z flags, which RUSTC_BOOTSTRAP=1
# allows on stable (no sanitizer: `-s none`; Rust's own checks and debug assertions stay on).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
secs="${1:-10}"
export CARGO_TARGET_DIR="${AISERVE_FUZZ_TARGET:-$HOME/.cache/aiserve-fuzz-target}"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
cd "$here/fuzz"
cargo fuzz build -s none -O 2>&1 | tail -1
# Seed corpora from real inputs, so the fuzzer starts from valid files and mutates inward.
mkdir -p corpus/{json_tensor,picture,idx,safetensors,configs,kserve_bytes,gguf,generation,grpc_tensors,ocr_steps,grammars}
cp "$here/../shared/peers/payload_28x28.json" corpus/json_tensor/ 2>/dev/null || true
cp "$here/models/digits/1/config.toml" corpus/configs/
printf 'max_batch_size = 32\n[version_policy]\nlatest = 2\n' >corpus/configs/model.toml
python3 - "$here" <<'PY'
import struct, sys, zlib, os
here = sys.argv[1]
c = os.path.join(here, "fuzz", "corpus")
# a 4x4 grey PNG
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"".join(b"\0" + bytes([i * 16] * 4) for i in range(4)))) + chunk(b"IEND", b"")
open(os.path.join(c, "picture", "grey.png"), "wb").write(png)
open(os.path.join(c, "ocr_steps", "grey.png"), "wb").write(png)
# a 16x24 map with a bright bar, then picture bytes
bar = bytes(255 if 5 <= i // 24 <= 8 and 3 <= i % 24 <= 20 else 0 for i in range(16 * 24))
open(os.path.join(c, "ocr_steps", "bar"), "wb").write(bytes([15, 23]) + bar)
open(os.path.join(c, "idx", "images"), "wb").write(struct.pack(">IIII", 0x803, 2, 2, 2) + bytes(range(8)))
open(os.path.join(c, "idx", "labels"), "wb").write(struct.pack(">II", 0x801, 3) + bytes([1, 2, 3]))
hdr = b'{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}'
open(os.path.join(c, "safetensors", "tiny"), "wb").write(struct.pack("<Q", len(hdr)) + hdr + bytes(16))
open(os.path.join(c, "kserve_bytes", "two"), "wb").write(struct.pack("<I", 2) + b"hi" + struct.pack("<I", 0))
# a GGUF v3 file with no tensors and a tiny byte-level BPE tokenizer
def s_(x): b = x.encode(); return struct.pack("<Q", len(b)) + b
def kv_str(k, v): return s_(k) + struct.pack("<I", 8) + s_(v)
def kv_strs(k, vs): return s_(k) + struct.pack("<IIQ", 9, 8, len(vs)) + b"".join(s_(v) for v in vs)
def kv_i32s(k, vs): return s_(k) + struct.pack("<IIQ", 9, 5, len(vs)) + b"".join(struct.pack("<i", v) for v in vs)
def kv_u32(k, v): return s_(k) + struct.pack("<II", 4, v)
toks = ["a", "b", "ab", "<|im_start|>", "\u0120"]
kvs = [kv_str("tokenizer.ggml.model", "gpt2"), kv_str("tokenizer.ggml.pre", "smollm"), kv_strs("tokenizer.ggml.tokens", toks),
       kv_strs("tokenizer.ggml.merges", ["a b"]), kv_i32s("tokenizer.ggml.token_type", [1, 1, 1, 3, 1]), kv_u32("tokenizer.ggml.bos_token_id", 3)]
open(os.path.join(c, "gguf", "tiny.gguf"), "wb").write(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))
# generation: template \x01 message \x01 stops (\x02-separated) \x01 streamed pieces (\x01-separated)
smol = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\\n' + message['content'].strip() + '<|im_end|>\\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
open(os.path.join(c, "generation", "smollm2"), "w").write(smol + "\x01What is 2 + 2?\x01\n\nUser:\x02END\x01The answer\x01 is 4.\x01\n\nUs\x01er: next")
# tool calls in each format, streamed in \x03-separated pieces
open(os.path.join(c, "generation", "tools"), "w").write("{{ tools | tojson }}\x01[{\"type\": \"function\"}]\x01\x01"
    "Hi<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool\x03_call>\x03[TOOL_CALLS][{\"name\": \"g\", \"arguments\": {}}]")
# grammars: kind byte (0 schema, 1 regex, 2 Lark, 3 choices), source \x01 bytes that pick tokens
open(os.path.join(c, "grammars", "schema"), "wb").write(b'\x00{"type":"object","properties":{"a":{"type":"integer"},"b":{"enum":["x","y"]}},"required":["a"]}\x01{"a": 12, "b": "x"}')
open(os.path.join(c, "grammars", "regex"), "wb").write(b"\x01[0-9]{3}-[a-z]+\x01123-abc")
open(os.path.join(c, "grammars", "lark"), "wb").write(b'\x02start: "(" start ")" | "x"\x01((x))')
open(os.path.join(c, "grammars", "choice"), "wb").write(b"\x03yes|no|maybe\x01maybe")
# gRPC messages: a KServe ModelInferRequest with raw contents and a TF Serving PredictRequest
def varint(n):
    out = b""
    while True:
        b = n & 0x7f; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])
def ld(field, b): return varint(field << 3 | 2) + varint(len(b)) + b
tensor_in = ld(1, b"image") + ld(2, b"FP32") + ld(3, varint(1) + varint(2))
open(os.path.join(c, "grpc_tensors", "infer"), "wb").write(ld(1, b"digits") + ld(5, tensor_in) + ld(7, bytes(8)))
tf_tensor = varint(1 << 3) + varint(1) + ld(2, ld(2, varint(1 << 3) + varint(2))) + ld(4, bytes(8))
open(os.path.join(c, "grpc_tensors", "predict"), "wb").write(ld(1, ld(1, b"digits")) + ld(2, ld(1, b"image") + ld(2, tf_tensor)))
PY
for t in json_tensor kserve_bytes picture idx safetensors gguf configs generation grpc_tensors ocr_steps grammars; do
  # Inputs that once crashed a target (fuzz/regressions/<target>) are replayed first.
  extra=(); [ -d "regressions/$t" ] && extra=("regressions/$t")
  out=$(cargo fuzz run -s none -O "$t" "corpus/$t" "${extra[@]}" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 2>&1) || {
    echo "$out" | grep -E -A3 "panicked|ERROR: libFuzzer" | head -20; echo "$out" | tail -8
    echo "fuzz target $t crashed (reproducer in fuzz/artifacts/$t/)" >&2; exit 1; }
  echo "$t: $(echo "$out" | grep -E '^Done [0-9]+ runs' | tail -1)"
done
