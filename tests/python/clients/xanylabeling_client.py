"""X-AnyLabeling's own remote-server client (x-anylabeling-cvhub's RemoteServer) against a server,
headless, as its tests drive it (tests/test_auto_labeling/test_remote_server.py in X-AnyLabeling):
argv: server_url, api_key ("" for none), image path, marks as JSON. Prints what the client got as
JSON: the models it listed, the shapes, replace, and the messages it would show the user."""
import json
import os
import sys
import types
from unittest.mock import Mock, patch

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.modules.setdefault("openai", types.SimpleNamespace(OpenAI=object))  # (only its chatbot imports openai)
from anylabeling.services.auto_labeling.remote_server import RemoteServer  # noqa: E402

url, api_key, image_path, marks = sys.argv[1], sys.argv[2] or None, sys.argv[3], json.loads(sys.argv[4])
with patch("anylabeling.services.auto_labeling.model.get_config",
           return_value={"remote_server_settings": {"server_url": url, "api_key": api_key}}):
    client = RemoteServer({"type": "remote_server", "display_name": "Remote-Server", "timeout": 120}, Mock())
models = client.get_available_models()
client.set_model_id(next(iter(models), "segment_anything"))
client.set_mask_fineness(0.0001)  # (the slider at 1: the finest polygons)
client.set_auto_labeling_marks(marks)
result = client.predict_shapes(object(), image_path=image_path)
print(json.dumps({"models": models, "replace": result.replace,
                  "messages": [str(c.args[0]) for c in client.on_message.call_args_list],
                  "shapes": [{"label": s.label, "shape_type": s.shape_type, "score": s.score,
                              "points": [[p.x(), p.y()] for p in s.points]} for s in result.shapes]}))
