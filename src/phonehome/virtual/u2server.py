"""The uiautomator2 server of a virtual phone: HTTP JSON-RPC on device port 9008.

The real server is ``u2.jar`` run by ``app_process``; uiautomator2 reaches it through adb's ``tcp:9008`` stream,
asks ``GET /ping`` for ``pong`` and then ``POST /jsonrpc/0``. This one answers the methods uiautomator2's
``Device`` calls (``deviceInfo``, ``wakeUp``, ``sleep``, ``pressKey``, ``swipe``, ``click``,
``dumpWindowHierarchy``, ``takeScreenshot``, selector queries...) from the phone's state, so the unmodified library
drives it. Unknown methods answer JSON-RPC -32601, as the real server does.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from xml.sax.saxutils import quoteattr

from phonehome.virtual.phone import (
    LAUNCHER,
    SYSTEMUI,
    VirtualPhone,
    pin_pad,
)

log = logging.getLogger(__name__)

#: what ``app_process`` must be asked to run for the server to start
U2_MAIN_CLASSES = frozenset(("com.wetest.uia2.Main",))
#: a request body larger than this is refused (the real server takes small JSON documents)
MAX_BODY_BYTES = 4 * 1024 * 1024
#: how long one HTTP connection may sit idle
HTTP_IDLE_TIMEOUT_S = 30.0
#: the longest waitForExists honoured, in milliseconds
MAX_WAIT_MS = 60_000

ERR_PARSE = -32700
ERR_INVALID_REQUEST = -32600
ERR_METHOD_NOT_FOUND = -32601
ERR_INVALID_PARAMS = -32602
ERR_UI_OBJECT_NOT_FOUND = -32002

ACTION_DOWN = 0
ACTION_UP = 1
ACTION_MOVE = 2

# uiautomator2 ``press()`` key names -> Android key codes
KEY_NAMES: dict[str, int] = {
    "home": 3, "back": 4, "left": 21, "right": 22, "up": 19, "down": 20, "center": 23, "menu": 82, "search": 84,
    "enter": 66, "delete": 67, "del": 67, "recent": 187, "volume_up": 24, "volume_down": 25, "volume_mute": 164,
    "camera": 27, "power": 26,
}

LAUNCHER_APPS: tuple[tuple[str, str], ...] = (
    ("Phone", "com.android.dialer"), ("Messages", "com.android.messaging"), ("Chrome", "com.android.chrome"),
    ("Camera", "com.android.camera2"), ("Contacts", "com.android.contacts"), ("Settings", "com.android.settings"),
    ("Play Store", "com.android.vending"),
)


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass(frozen=True)
class Node:
    """One view of the window hierarchy, as uiautomator dumps it."""

    class_name: str
    package: str
    bounds: tuple[int, int, int, int]
    text: str = ""
    resource_id: str = ""
    content_desc: str = ""
    clickable: bool = False
    focused: bool = False
    password: bool = False
    children: tuple[Node, ...] = ()

    def walk(self) -> list[Node]:
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out

    def info(self) -> dict[str, Any]:
        """``objInfo`` as the real server returns it."""
        left, top, right, bottom = self.bounds
        box = {"left": left, "top": top, "right": right, "bottom": bottom}
        return {"bounds": box, "visibleBounds": box, "childCount": len(self.children),
                "className": self.class_name, "contentDescription": self.content_desc or None,
                "packageName": self.package, "resourceName": self.resource_id or None, "text": self.text,
                "checkable": False, "checked": False, "clickable": self.clickable, "enabled": True,
                "focusable": self.clickable, "focused": self.focused, "longClickable": False,
                "scrollable": False, "selected": False}


def window_hierarchy(phone: VirtualPhone) -> Node:
    """What is on screen: the lock screen (with the bouncer once brought up), the launcher or an app."""
    width, height = phone.display_size
    full = (0, 0, width, height)
    status_bar = Node("android.widget.FrameLayout", SYSTEMUI, (0, 0, width, 63),
                      resource_id="com.android.systemui:id/status_bar",
                      children=(Node("android.widget.TextView", SYSTEMUI, (30, 0, 200, 63),
                                     text=time.strftime("%H:%M"), resource_id="com.android.systemui:id/clock"),))
    package = phone.foreground
    if package == SYSTEMUI:
        content: list[Node] = [Node("android.widget.TextClock", SYSTEMUI, (0, height // 8, width, height // 4),
                                    text=time.strftime("%H:%M"),
                                    resource_id="com.android.systemui:id/clock_view")]
        method = phone.spec.unlock_method
        if phone.bouncer_showing and method == "pin":
            content.append(Node("android.widget.TextView", SYSTEMUI, (0, height // 3 - 60, width, height // 3 + 60),
                                resource_id="com.android.systemui:id/pinEntry", password=True,
                                content_desc="PIN area"))
            for key in pin_pad((width, height)):
                rid = {"delete": "delete_button", "enter": "key_enter"}.get(key.key, f"key{key.key}")
                desc = {"delete": "Delete", "enter": "Enter"}.get(key.key, "")
                content.append(Node("android.widget.TextView" if key.key.isdigit() else "android.widget.ImageButton",
                                    SYSTEMUI, key.bounds, text=key.key if key.key.isdigit() else "",
                                    resource_id=f"com.android.systemui:id/{rid}", content_desc=desc,
                                    clickable=True))
        elif phone.bouncer_showing and method == "password":
            content.append(Node("android.widget.EditText", SYSTEMUI, (60, height // 3 - 60, width - 60,
                                                                          height // 3 + 60),
                                resource_id="com.android.systemui:id/passwordEntry", password=True,
                                focused=True, clickable=True))
        else:
            content.append(Node("android.widget.TextView", SYSTEMUI, (0, height - 300, width, height - 200),
                                text="Swipe up to unlock",
                                resource_id="com.android.systemui:id/keyguard_indication_text"))
        root = Node("android.widget.FrameLayout", SYSTEMUI, full,
                    resource_id="com.android.systemui:id/keyguard_host_view", children=tuple(content))
    elif package == LAUNCHER:
        cell = width // 4
        icons = []
        for i, (label, _) in enumerate(LAUNCHER_APPS):
            x, y = (i % 4) * cell, height // 3 + (i // 4) * cell
            icons.append(Node("android.widget.TextView", LAUNCHER, (x, y, x + cell, y + cell), text=label,
                              content_desc=label, clickable=True, resource_id="com.android.launcher3:id/icon"))
        root = Node("android.widget.FrameLayout", LAUNCHER, full, resource_id="com.android.launcher3:id/launcher",
                    children=(Node("android.view.ViewGroup", LAUNCHER, full,
                                   resource_id="com.android.launcher3:id/workspace", children=tuple(icons)),))
    else:
        root = Node("android.widget.FrameLayout", package, full, resource_id="android:id/content",
                    children=(Node("android.widget.TextView", package, (0, 63, width, 200), text=package,
                                   resource_id=f"{package}:id/title"),))
    return Node("android.widget.FrameLayout", package, full, children=(root, status_bar))


def hierarchy_xml(phone: VirtualPhone, max_depth: int = 50) -> str:
    """``dumpWindowHierarchy``: the XML uiautomator writes."""
    lines = ["<?xml version='1.0' encoding='UTF-8' standalone='yes' ?>",
             f'<hierarchy rotation="{phone.rotation}">']

    def emit(node: Node, index: int, depth: int) -> None:
        left, top, right, bottom = node.bounds
        attrs = {
            "index": str(index), "text": node.text, "resource-id": node.resource_id, "class": node.class_name,
            "package": node.package, "content-desc": node.content_desc, "checkable": "false", "checked": "false",
            "clickable": str(node.clickable).lower(), "enabled": "true", "focusable": str(node.clickable).lower(),
            "focused": str(node.focused).lower(), "scrollable": "false", "long-clickable": "false",
            "password": str(node.password).lower(), "selected": "false", "visible-to-user": "true",
            "bounds": f"[{left},{top}][{right},{bottom}]",
        }
        rendered = " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items())
        pad = "  " * depth
        children = node.children if depth < max_depth else ()
        if children:
            lines.append(f"{pad}<node {rendered}>")
            for i, child in enumerate(children):
                emit(child, i, depth + 1)
            lines.append(f"{pad}</node>")
        else:
            lines.append(f"{pad}<node {rendered} />")

    emit(window_hierarchy(phone), 0, 1)
    lines.append("</hierarchy>")
    return "\n".join(lines)


_SELECTOR_IGNORED = frozenset(("mask", "childOrSibling", "childOrSiblingSelector", "instance"))


def _matches(node: Node, selector: dict[str, Any]) -> bool:
    checks: dict[str, Callable[[Any], bool]] = {
        "text": lambda v: node.text == v,
        "textContains": lambda v: v in node.text,
        "textMatches": lambda v: re.fullmatch(v, node.text) is not None,
        "textStartsWith": lambda v: node.text.startswith(v),
        "className": lambda v: node.class_name == v,
        "classNameMatches": lambda v: re.fullmatch(v, node.class_name) is not None,
        "description": lambda v: node.content_desc == v,
        "descriptionContains": lambda v: v in node.content_desc,
        "descriptionMatches": lambda v: re.fullmatch(v, node.content_desc) is not None,
        "descriptionStartsWith": lambda v: node.content_desc.startswith(v),
        "resourceId": lambda v: node.resource_id == v,
        "resourceIdMatches": lambda v: re.fullmatch(v, node.resource_id) is not None,
        "packageName": lambda v: node.package == v,
        "packageNameMatches": lambda v: re.fullmatch(v, node.package) is not None,
        "clickable": lambda v: node.clickable == bool(v),
        "focused": lambda v: node.focused == bool(v),
        "enabled": lambda v: bool(v),
    }
    for key, value in selector.items():
        if key in _SELECTOR_IGNORED:
            continue
        check = checks.get(key)
        if check is None or not check(value):
            return False
    return True


def find_nodes(phone: VirtualPhone, selector: dict[str, Any]) -> list[Node]:
    hits = [node for node in window_hierarchy(phone).walk() if _matches(node, selector)]
    instance = selector.get("instance")
    if isinstance(instance, int) and instance > 0:
        return hits[instance:instance + 1]
    return hits


class U2Server:
    """The JSON-RPC server bound to one phone's device port while ``app_process`` runs it."""

    def __init__(self, phone: VirtualPhone, port: int = 9008) -> None:
        self.phone = phone
        self.port = port
        self._touch_down: tuple[int, int] | None = None
        self._methods: dict[str, Callable[..., Any]] = {
            "deviceInfo": self.device_info, "wakeUp": self.wake_up, "sleep": self.sleep,
            "isScreenOn": lambda: phone.screen_on, "pressKey": self.press_key, "pressKeyCode": self.press_key_code,
            "swipe": self.swipe, "swipePoints": self.swipe_points, "drag": self.swipe, "click": self.click,
            "injectInputEvent": self.inject_input_event, "dumpWindowHierarchy": self.dump_window_hierarchy,
            "takeScreenshot": self.take_screenshot, "setOrientation": self.set_orientation,
            "freezeRotation": lambda freeze=True: None, "getLastToast": lambda: phone.toast,
            "clearLastToast": self.clear_toast, "makeToast": self.make_toast,
            "openNotification": lambda: True, "openQuickSettings": lambda: True,
            "getClipboard": lambda: phone.clipboard, "setClipboard": self.set_clipboard,
            "pasteClipboard": self.paste_clipboard, "clearInputText": lambda: None,
            "getLastTraversedText": lambda: None, "clearLastTraversedText": lambda: None,
            "waitForIdle": lambda timeout=0: True, "waitForWindowUpdate": lambda *a: True,
            "exist": self.exist, "waitForExists": self.wait_for_exists, "waitUntilGone": self.wait_until_gone,
            "objInfo": self.obj_info, "count": self.count, "objInfoOfAllInstances": self.all_infos,
            "getText": lambda sel: self._one(sel).text, "ping": lambda: "pong",
            "setText": self.set_text, "clearTextField": self.clear_text_field, "longClick": self.click,
        }

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> bool:
        """Listen on the device port; False when another server already does ("already registered")."""
        ok = self.phone.listen(self.port, self.handle_connection)
        if ok:
            self.phone.log("I", "UiAutomator2Server", f"Starting Server on port {self.port}", pid=4100)
        return ok

    def stop(self) -> None:
        if self.running:
            self.phone.log("I", "UiAutomator2Server", "Server stopped", pid=4100)
        self.phone.unlisten(self.port, self.handle_connection)

    @property
    def running(self) -> bool:
        return self.phone.port_handler(self.port) == self.handle_connection

    def handle_connection(self, sock: socket.socket) -> None:
        """Serve HTTP on one adb ``tcp:`` stream until the client closes it."""
        sock.settimeout(HTTP_IDLE_TIMEOUT_S)
        try:
            # BaseHTTPRequestHandler only keeps its "server" argument; the JSON-RPC methods live on self
            _Handler(sock, ("127.0.0.1", 0), self)  # type: ignore[arg-type]
        except OSError as exc:  # the client went away mid-request, or the phone rebooted
            log.debug("u2 connection ended: %s", exc)

    # --- JSON-RPC ----------------------------------------------------------------------------------------

    def call(self, request: Any) -> dict[str, Any]:
        """One JSON-RPC 2.0 request -> response object."""
        if not isinstance(request, dict) or "method" not in request:
            return _error(None, ERR_INVALID_REQUEST, "Invalid Request")
        rid = request.get("id")
        method = self._methods.get(str(request["method"]))
        if method is None:
            return _error(rid, ERR_METHOD_NOT_FOUND, f"Method not found: {request['method']}")
        params = request.get("params")
        try:
            if isinstance(params, dict):
                result = method(**params)
            elif isinstance(params, list):
                result = method(*params)
            elif params is None:
                result = method()
            else:
                return _error(rid, ERR_INVALID_PARAMS, "Invalid params")
        except RpcError as exc:
            return _error(rid, exc.code, exc.message, exc.data)
        except (TypeError, ValueError, KeyError) as exc:
            return _error(rid, ERR_INVALID_PARAMS, f"Invalid params: {exc}")
        return {"jsonrpc": "2.0", "id": rid, "result": result}

    def device_info(self) -> dict[str, Any]:
        phone = self.phone
        width, height = phone.display_size
        if phone.rotation % 2:
            width, height = height, width
        density = phone.density
        return {
            "currentPackageName": phone.foreground, "displayHeight": height, "displayRotation": phone.rotation,
            "displaySizeDpX": round(width * 160 / density), "displaySizeDpY": round(height * 160 / density),
            "displayWidth": width, "productName": phone.getprop("ro.product.name"),
            "screenOn": phone.screen_on, "sdkInt": phone.spec.sdk, "naturalOrientation": phone.rotation % 2 == 0,
        }

    def wake_up(self) -> None:
        self.phone.wake()

    def sleep(self) -> None:
        self.phone.sleep()

    def press_key(self, key: str) -> bool:
        code = KEY_NAMES.get(str(key).lower())
        if code is None:
            raise RpcError(ERR_INVALID_PARAMS, f"java.lang.IllegalArgumentException: unknown key {key}")
        self.phone.press_key(code)
        return True

    def press_key_code(self, code: int, meta: int = 0) -> bool:
        self.phone.press_key(int(code))
        return True

    def swipe(self, fx: int, fy: int, tx: int, ty: int, steps: int = 55) -> bool:
        self.phone.swipe(int(fx), int(fy), int(tx), int(ty))
        return True

    def swipe_points(self, points: list[int], steps: int = 10) -> bool:
        if len(points) < 4:
            return False
        self.phone.swipe(int(points[0]), int(points[1]), int(points[-2]), int(points[-1]))
        return True

    def click(self, *args: Any) -> bool:
        if args and isinstance(args[0], dict):  # click(selector): the object's centre
            node = self._one(args[0])
            left, top, right, bottom = node.bounds
            self.phone.tap((left + right) // 2, (top + bottom) // 2)
            return True
        x, y = int(args[0]), int(args[1])
        self.phone.tap(x, y)
        return True

    def inject_input_event(self, action: int, x: float, y: float, meta: int = 0) -> bool:
        """touch.down/move/up: a down and an up far apart is a swipe, close together a tap."""
        if action == ACTION_DOWN:
            self._touch_down = (int(x), int(y))
        elif action == ACTION_UP and self._touch_down is not None:
            x0, y0 = self._touch_down
            self._touch_down = None
            if abs(int(x) - x0) + abs(int(y) - y0) < 20:
                self.phone.tap(x0, y0)
            else:
                self.phone.swipe(x0, y0, int(x), int(y))
        return True

    def dump_window_hierarchy(self, compressed: bool = False, max_depth: int = 50,
                              root_in_active: bool | None = None) -> str:
        return hierarchy_xml(self.phone, int(max_depth))

    def take_screenshot(self, scale: float = 1.0, quality: int = 80) -> str:
        jpeg = self.phone.screenshot("JPEG", quality=int(quality), scale=float(scale))
        return base64.b64encode(jpeg).decode("ascii")

    def set_orientation(self, value: str) -> None:
        rotations = {"natural": 0, "n": 0, "left": 1, "l": 1, "upsidedown": 2, "u": 2, "right": 3, "r": 3}
        if value not in rotations:
            raise RpcError(ERR_INVALID_PARAMS, f"java.lang.IllegalArgumentException: orientation {value}")
        self.phone.set_display(rotation=rotations[value])

    def clear_toast(self) -> bool:
        self.phone.toast = None
        return True

    def make_toast(self, text: str, duration_ms: float = 1000) -> bool:
        self.phone.toast = text
        return True

    def set_clipboard(self, label: str | None, text: str) -> None:
        self.phone.clipboard = text

    def paste_clipboard(self) -> None:
        if self.phone.clipboard:
            self.phone.type_text(self.phone.clipboard)

    # selectors --------------------------------------------------------------------------------------------

    def _one(self, selector: dict[str, Any]) -> Node:
        nodes = find_nodes(self.phone, selector)
        if not nodes:
            raise RpcError(ERR_UI_OBJECT_NOT_FOUND, "uiautomator.UiObjectNotFoundException",
                           f"UiSelector[{selector}]")
        return nodes[0]

    def set_text(self, selector: dict[str, Any], text: str) -> bool:
        """Typing into the keyguard's PIN/password field types the credential (ENTER still submits it)."""
        node = self._one(selector)
        if node.password:
            self.phone.clear_entry()
            self.phone.type_text(str(text))
        return True

    def clear_text_field(self, selector: dict[str, Any]) -> None:
        if self._one(selector).password:
            self.phone.clear_entry()

    def exist(self, selector: dict[str, Any]) -> bool:
        return bool(find_nodes(self.phone, selector))

    def wait_for_exists(self, selector: dict[str, Any], timeout_ms: float = 0) -> bool:
        deadline = time.monotonic() + min(float(timeout_ms), MAX_WAIT_MS) / 1000
        while True:
            if find_nodes(self.phone, selector):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def wait_until_gone(self, selector: dict[str, Any], timeout_ms: float = 0) -> bool:
        deadline = time.monotonic() + min(float(timeout_ms), MAX_WAIT_MS) / 1000
        while True:
            if not find_nodes(self.phone, selector):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def obj_info(self, selector: dict[str, Any]) -> dict[str, Any]:
        return self._one(selector).info()

    def count(self, selector: dict[str, Any]) -> int:
        return len(find_nodes(self.phone, selector))

    def all_infos(self, selector: dict[str, Any]) -> list[dict[str, Any]]:
        return [node.info() for node in find_nodes(self.phone, selector)]


def _error(rid: Any, code: int, message: str, data: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": rid, "error": error}


class _Handler(BaseHTTPRequestHandler):
    """HTTP on an adb stream: the request handler is given the raw socket, no listening server is involved."""

    server: U2Server  # type: ignore[assignment]
    protocol_version = "HTTP/1.0"
    server_version = "NanoHTTPD"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("u2server: " + format, *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/ping":
            self._send(200, b"pong", "text/plain")
        elif self.path == "/info":
            self._send(200, json.dumps(self.server.device_info()).encode(), "application/json")
        else:
            self._send(404, b"Not Found", "text/plain")

    def do_POST(self) -> None:
        if not self.path.startswith("/jsonrpc/0"):
            self._send(404, b"Not Found", "text/plain")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._send(413, b"Request Entity Too Large", "text/plain")
            return
        body = self.rfile.read(length)
        try:
            request = json.loads(body)
        except ValueError:
            response = _error(None, ERR_PARSE, "Parse error")
        else:
            response = self.server.call(request)
        self._send(200, json.dumps(response).encode(), "application/json")
