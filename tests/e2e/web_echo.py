# A WebSocket echo with Python's standard library only, for tests/e2e/web.rs: GET /
# is a page that opens a WebSocket back to this server, sends "hello" and shows the
# answer in #out; GET with `Upgrade: websocket` is the echo (text frames back as
# they came, unmasked, as a server sends them).
import base64
import hashlib
import http.server

PAGE = b"""<!doctype html><title>echo</title><p id="out">waiting</p><script>
const url = (location.protocol == 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
const ws = new WebSocket(url);
ws.onopen = () => ws.send('hello');
ws.onmessage = (e) => { document.getElementById('out').textContent = 'echo: ' + e.data; };
ws.onerror = () => { document.getElementById('out').textContent = 'error'; };
</script>"""
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() != "websocket":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)
            return
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = int.from_bytes(self.rfile.read(2), "big")
            elif length == 127:
                length = int.from_bytes(self.rfile.read(8), "big")
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 8:
                return
            if opcode == 1:
                size = bytes([len(data)]) if len(data) < 126 else bytes([126]) + len(data).to_bytes(2, "big")
                self.wfile.write(bytes([0x81]) + size + data)
                self.wfile.flush()

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", 8765), Echo).serve_forever()
