"""`--repo s3://...` against a real S3-compatible server: moto's server mode (PyPI `moto[server]`)
with its IAM authentication on, so every request must carry a valid SigV4 signature.

    python tests/clients/object_store_check.py AISERVE_BINARY MODELS_DIR

(run with a Python that has `moto[server]`, e.g. bench/s3_server.sh's venv). Checks, on loopback:
a version uploaded to the bucket is mirrored and served; a new version is picked up and the
old one retired; a version deleted from the bucket retires; a `model.toml` uploaded beside the
versions applies; the mirror survives a restart without downloading again; a listing refused
(wrong secret) or failing (server gone) keeps what is served; the secret never reaches the log;
two servers cannot share one mirror; and SIGTERM with --drain-delay-ms answers readiness 503
while requests are still served, then exits cleanly.
"""
import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "4"  # the IAM set-up below; signed requests after it
logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request otherwise
import boto3  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402


def http(method, url, body=None, timeout=10):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait(what, check, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if check():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Server:
    def __init__(self, binary, env, cache, *extra):
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        args = [binary, "serve", "--repo", "s3://models/prod", "--repo-cache", cache, "--addr", "127.0.0.1:0",
                "--grpc-addr", "off", "--poll-interval-ms", "200", *extra]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.addr = None
        wait("the server's address", self._addr, 30)

    def _addr(self):
        text = self.text()
        if self.proc.poll() is not None:
            raise AssertionError(f"aiserve exited {self.proc.returncode}:\n{text}")
        for line in text.splitlines():
            if "aiserve listening" in line and "addr=" in line:
                self.addr = line.split("addr=")[1].split()[0]
                return True
        return False

    def text(self):
        return pathlib.Path(self.log.name).read_text()

    def url(self, path):
        return f"http://{self.addr}{path}"

    def ready(self, model, version):
        return http("GET", self.url(f"/v2/models/{model}/versions/{version}/ready"))[0] == 200

    def infer(self):
        body = {"inputs": [{"name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32", "data": [0.0] * 784}]}
        status, out = http("POST", self.url("/v2/models/digits/infer"), body)
        assert status == 200, (status, out)
        return json.loads(out)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0, self.text()


def main():
    binary, models = sys.argv[1], pathlib.Path(sys.argv[2])
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{moto._server.server_port}"
    admin = dict(endpoint_url=endpoint, region_name="us-east-1")
    iam = boto3.client("iam", aws_access_key_id="setup", aws_secret_access_key="setup", **admin)
    iam.create_user(UserName="aiserve")
    key = iam.create_access_key(UserName="aiserve")["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="aiserve", PolicyName="s3", PolicyDocument=json.dumps(policy))
    s3 = boto3.client("s3", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], **admin)
    s3.create_bucket(Bucket="models")

    def upload(version):
        for f in sorted((models / "digits" / "1").iterdir()):
            s3.put_object(Bucket="models", Key=f"prod/digits/{version}/{f.name}", Body=f.read_bytes())

    def delete(version):
        listed = s3.list_objects_v2(Bucket="models", Prefix=f"prod/digits/{version}/").get("Contents", [])
        for o in listed:
            s3.delete_object(Bucket="models", Key=o["Key"])

    upload(1)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"],
               AWS_ENDPOINT_URL=endpoint, AWS_ALLOW_HTTP="true", AWS_REGION="us-east-1",
               RUST_LOG="debug,hyper=info,h2=info,reqwest=debug")
    work = tempfile.mkdtemp()
    cache = os.path.join(work, "mirror")
    server = Server(binary, env, cache)
    wait("version 1 from the bucket", lambda: server.ready("digits", 1))
    assert len(server.infer()["outputs"][0]["data"]) == 10
    print("s3: version 1 mirrored and served")

    upload(2)
    wait("version 2 from the bucket", lambda: server.ready("digits", 2))
    wait("version 1 retired", lambda: not server.ready("digits", 1))
    print("s3: version 2 picked up, version 1 retired (latest policy)")
    delete(2)
    wait("version 2 retired after its deletion", lambda: not server.ready("digits", 2) and server.ready("digits", 1))
    assert not os.path.exists(os.path.join(cache, "digits", "2"))
    print("s3: version 2 deleted from the bucket -> retired, version 1 back")
    upload(3)
    s3.put_object(Bucket="models", Key="prod/digits/model.toml", Body=b"[version_policy]\nlatest = 2\n")
    wait("two versions under model.toml's policy", lambda: server.ready("digits", 1) and server.ready("digits", 3))
    print("s3: model.toml from the bucket applies (latest = 2: versions 1 and 3)")

    # A second server cannot mirror into the same directory.
    second = subprocess.run([binary, "serve", "--repo", "s3://models/prod", "--repo-cache", cache, "--addr", "127.0.0.1:0",
                             "--grpc-addr", "off"], env=env, capture_output=True, text=True, timeout=30)
    assert second.returncode != 0 and "another aiserve process" in second.stderr, second.stderr
    print("s3: a second server on the same mirror is refused")

    # A restart: the mirror is current, nothing is downloaded again.
    server.stop()
    restarted = Server(binary, env, cache)
    wait("versions after a restart", lambda: restarted.ready("digits", 1) and restarted.ready("digits", 3))
    assert "version mirrored" not in restarted.text(), restarted.text()
    print("s3: restart served the mirror without downloading again")
    restarted.stop()

    # Refused credentials: the mirror is kept and served, and the secret is not logged.
    wrong = dict(env, AWS_SECRET_ACCESS_KEY="wrong-secret-canary-5b1e")
    refused = Server(binary, wrong, cache)
    wait("readiness with the listing refused", lambda: http("GET", refused.url("/v2/health/ready"))[0] == 200)
    assert refused.ready("digits", 3), refused.text()
    assert "SignatureDoesNotMatch" in refused.text() or "403" in refused.text(), refused.text()
    _, metrics = http("GET", refused.url("/metrics"))
    assert b'aiserve_repository_syncs_total{result="failed"}' in metrics, metrics[-2000:]
    refused.stop()
    for log in (server.text(), restarted.text(), refused.text()):
        assert key["SecretAccessKey"] not in log and "wrong-secret-canary" not in log, "a secret reached the log"
    print("s3: refused credentials keep the mirror serving; no secret in any log (debug level)")

    # Draining: readiness 503 while requests are still served, then a clean exit.
    drained = Server(binary, env, cache, "--drain-delay-ms", "1500")
    wait("ready", lambda: http("GET", drained.url("/v2/health/ready"))[0] == 200)
    drained.proc.send_signal(signal.SIGTERM)
    wait("readiness 503 while draining", lambda: http("GET", drained.url("/v2/health/ready"))[0] == 503, 5)
    assert http("GET", drained.url("/v2/health/live"))[0] == 200
    assert len(drained.infer()["outputs"][0]["data"]) == 10
    assert drained.proc.wait(30) == 0, drained.text()
    print("s3: SIGTERM -> readiness 503, requests still served for the drain delay, clean exit")

    # The store going away: what is mirrored stays served.
    last = Server(binary, env, cache)
    wait("ready", lambda: last.ready("digits", 3))
    moto.stop()
    time.sleep(1.0)
    assert last.ready("digits", 3) and last.ready("digits", 1)
    last.infer()
    last.stop()
    assert "cannot list the remote repository" in last.text(), last.text()
    print("s3: the store gone -> versions kept serving")


if __name__ == "__main__":
    main()
