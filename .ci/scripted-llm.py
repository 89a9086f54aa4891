"""A scripted OpenAI-compatible endpoint for CI's page checks: a tick that creates a
to-do, repeats the same call (deduped), completes a to-do that does not exist (the
product answers with an error), stops, and rates. Stateless: the turn is read off the
conversation. Usage: python3 scripted-llm.py PORT"""
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

def completion(message, finish):
    return {"id": "chatcmpl-ci", "object": "chat.completion", "created": 0, "model": "scripted-model",
            "choices": [{"index": 0, "message": dict(role="assistant", **message), "finish_reason": finish}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 20, "total_tokens": 140}}

def call(name, arguments, n):
    return completion({"content": None, "tool_calls": [{"id": f"call_{n}", "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)}}]}, "tool_calls")

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply({"object": "list", "data": [{"id": "scripted-model"}]})

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        messages = request.get("messages", [])
        answered = sum(1 for m in messages if m.get("role") == "tool")
        if not request.get("tools"):
            self.reply(completion({"content": json.dumps({"ratings": [
                {"module": "todo", "rating": 2, "reason": "Anlegen ging, aber abhaken klappte nicht."}]})}, "stop"))
        elif answered < 2:
            self.reply(call("todo_create", {"title": "Steuererklärung abgeben", "due": "2026-12-18"}, answered))
        elif answered == 2:
            self.reply(call("todo_complete", {"id": 999999}, answered))
        else:
            self.reply(completion({"content": "Fertig für heute, der Rest kommt morgen."}, "stop"))

HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
