"""The virtual phone's shell: a small POSIX-sh interpreter and the Android commands a harness uses.

adbutils wraps every command as ``CMD; echo X4EXIT:$?`` and uiautomator2 starts its server as
``CLASSPATH=... app_process ...``, so the interpreter understands lists (``;``, ``&&``, ``||``, newlines), pipes,
quoting, ``$?``/``$VAR`` expansion, leading ``NAME=value`` assignments and simple redirections. Commands print
what Android prints, because harnesses grep it (``mWakefulness=``, keyguard fields, ``Physical size:``,
Parcel dumps of ``service call iphonesubinfo``). An unknown command fails as on Android: rc 127 and
``/system/bin/sh: X: inaccessible or not found``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from phonehome.virtual.dumps import (
    dump_iphonesubinfo,
    dump_location,
    dump_power,
    dump_telephony_registry,
    dump_wifi,
    dump_window,
)
from phonehome.virtual.phone import (
    LAUNCHER,
    LAUNCHER_ACTIVITY,
    iter_props,
)

if TYPE_CHECKING:
    from phonehome.virtual.phone import VirtualPhone

#: how often a long-running command (logcat, app_process, reboot) checks whether its stream was closed
HANGUP_POLL_S = 0.2
#: the longest ``sleep`` accepted (a stuck test must not hang the shell for hours)
MAX_SLEEP_S = 600.0
#: the device port uiautomator2 starts its server on unless told otherwise (``-p``)
U2_DEFAULT_PORT = 9008

SH = "/system/bin/sh"
EX_NOT_FOUND = 127
EX_USAGE = 1

# Key names ``input keyevent`` accepts (with or without KEYCODE_); digits and letters are added below.
KEYCODES: dict[str, int] = {
    "HOME": 3, "BACK": 4, "CALL": 5, "ENDCALL": 6, "STAR": 17, "POUND": 18, "DPAD_UP": 19, "DPAD_DOWN": 20,
    "DPAD_LEFT": 21, "DPAD_RIGHT": 22, "DPAD_CENTER": 23, "VOLUME_UP": 24, "VOLUME_DOWN": 25, "POWER": 26,
    "CAMERA": 27, "CLEAR": 28, "COMMA": 55, "PERIOD": 56, "TAB": 61, "SPACE": 62, "ENTER": 66, "DEL": 67,
    "MENU": 82, "NOTIFICATION": 83, "SEARCH": 84, "VOLUME_MUTE": 164, "APP_SWITCH": 187, "SLEEP": 223,
    "WAKEUP": 224, "ESCAPE": 111, "FORWARD_DEL": 112,
}
KEYCODES.update({str(d): 7 + d for d in range(10)})
KEYCODES.update({chr(ord("A") + i): 29 + i for i in range(26)})

#: ``service call iphonesubinfo CODE`` transaction codes (IPhoneSubInfo.aidl) -> identifier, per Android era
IPHONESUBINFO_CODES_PIE: dict[int, str] = {
    1: "imei", 3: "imei", 4: "imei", 7: "imsi", 8: "imsi", 11: "iccid", 12: "iccid", 13: "phone", 14: "phone",
}
#: Android 10: getGroupIdLevel1 gone, so getIccSerialNumber is 10 and getLine1Number 12
IPHONESUBINFO_CODES_Q: dict[int, str] = {
    1: "imei", 3: "imei", 4: "imei", 7: "imsi", 8: "imsi", 10: "iccid", 11: "iccid", 12: "phone", 13: "phone",
}
#: Android 11 and later: each getter has a ``*WithFeature`` twin after it
IPHONESUBINFO_CODES_R: dict[int, str] = {
    1: "imei", 2: "imei", 4: "imei", 5: "imei", 8: "imsi", 9: "imsi", 10: "imsi", 12: "iccid", 13: "iccid",
    14: "iccid", 15: "phone", 16: "phone",
}
#: from Android 10 (SDK 29) device identifiers need READ_PRIVILEGED_PHONE_STATE, which the shell lacks
PRIVILEGED_IDS_SDK = 29
#: Android 11 (SDK 30) renumbered the transactions again
FEATURE_IDS_SDK = 30


def iphonesubinfo_codes(sdk: int) -> dict[int, str]:
    """The transaction-code table of an Android version (harnesses read identifiers with it)."""
    if sdk >= FEATURE_IDS_SDK:
        return IPHONESUBINFO_CODES_R
    return IPHONESUBINFO_CODES_Q if sdk >= PRIVILEGED_IDS_SDK else IPHONESUBINFO_CODES_PIE


class ShellSyntaxError(Exception):
    """The command line does not parse (unbalanced quotes, a dangling operator)."""


# --- parsing -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Part:
    """A piece of a word: literal text, or a variable to expand at run time (``$?``, ``$HOME``)."""

    text: str
    is_var: bool = False


@dataclass(frozen=True)
class Word:
    parts: tuple[Part, ...]

    def expand(self, env: dict[str, str]) -> str:
        return "".join(env.get(p.text, "") if p.is_var else p.text for p in self.parts)

    @property
    def literal(self) -> str | None:
        """The text when the word has no expansions (assignments and operators are recognised on it)."""
        if any(p.is_var for p in self.parts):
            return None
        return "".join(p.text for p in self.parts)


@dataclass(frozen=True)
class Redirect:
    fd: int
    op: str  # ">", ">>", "<", ">&"
    target: Word


@dataclass(frozen=True)
class Command:
    assignments: tuple[tuple[str, Word], ...]
    args: tuple[Word, ...]
    redirects: tuple[Redirect, ...]


@dataclass(frozen=True)
class AndOr:
    """``first`` then (operator, pipeline) pairs: ``a && b || c``."""

    first: tuple[Command, ...]
    rest: tuple[tuple[str, tuple[Command, ...]], ...]


@dataclass(frozen=True)
class Token:
    kind: str  # "word" | "op"
    value: str
    word: Word | None = None


_OPERATORS = ("&&", "||", ";;", ">>", ">&", "&>", ";", "|", "&", "<", ">", "\n")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def tokenize(line: str) -> list[Token]:
    """Split a command line into words and operators, keeping quoted text literal."""
    tokens: list[Token] = []
    i, n = 0, len(line)
    parts: list[Part] = []
    buf: list[str] = []
    in_word = False

    def flush_buf() -> None:
        if buf:
            parts.append(Part("".join(buf)))
            buf.clear()

    def end_word() -> None:
        nonlocal in_word
        flush_buf()
        if in_word:
            word = Word(tuple(parts))
            tokens.append(Token("word", word.literal or "", word))
            parts.clear()
        in_word = False

    def read_var(j: int) -> tuple[Part | None, int]:
        # line[j] == "$"
        if j + 1 >= n:
            return None, j + 1
        nxt = line[j + 1]
        if nxt in "?$#!0":
            return Part(nxt, is_var=True), j + 2
        if nxt == "{":
            close = line.find("}", j + 2)
            if close == -1:
                raise ShellSyntaxError("syntax error: bad substitution")
            return Part(line[j + 2:close], is_var=True), close + 1
        m = _NAME.match(line, j + 1)
        if m:
            return Part(m.group(0), is_var=True), m.end()
        return None, j + 1

    while i < n:
        ch = line[i]
        if ch == "#" and not in_word:
            end = line.find("\n", i)
            i = n if end == -1 else end
            continue
        if ch in " \t\r":
            end_word()
            i += 1
            continue
        if ch == "\\" and i + 1 < n:
            in_word = True
            if line[i + 1] != "\n":
                buf.append(line[i + 1])
            i += 2
            continue
        if ch == "'":
            close = line.find("'", i + 1)
            if close == -1:
                raise ShellSyntaxError("syntax error: unterminated quoted string")
            in_word = True
            buf.append(line[i + 1:close])
            i = close + 1
            continue
        if ch == '"':
            in_word = True
            j = i + 1
            while True:
                if j >= n:
                    raise ShellSyntaxError("syntax error: unterminated quoted string")
                c = line[j]
                if c == '"':
                    j += 1
                    break
                if c == "\\" and j + 1 < n and line[j + 1] in '"\\$`\n':
                    buf.append(line[j + 1])
                    j += 2
                    continue
                if c == "$":
                    var, j2 = read_var(j)
                    if var is None:
                        buf.append("$")
                    else:
                        flush_buf()
                        parts.append(var)
                    j = j2
                    continue
                buf.append(c)
                j += 1
            i = j
            continue
        if ch == "$":
            in_word = True
            var, i = read_var(i)
            if var is None:
                buf.append("$")
            else:
                flush_buf()
                parts.append(var)
            continue
        if ch.isdigit() and not in_word and i + 1 < n and line[i + 1] in "<>":
            # an fd number before a redirection: 2>/dev/null, 2>&1
            end_word()
            op = ">>" if line.startswith(">>", i + 1) else (">&" if line.startswith(">&", i + 1) else line[i + 1])
            tokens.append(Token("op", ch + op))
            i += 1 + len(op)
            continue
        op_here = next((op for op in _OPERATORS if line.startswith(op, i)), None)
        if op_here is not None:
            end_word()
            tokens.append(Token("op", op_here))
            i += len(op_here)
            continue
        in_word = True
        buf.append(ch)
        i += 1
    end_word()
    return tokens


def parse(line: str) -> list[AndOr]:
    """Parse a command line into and-or lists (run in sequence)."""
    tokens = tokenize(line)
    pos = 0
    result: list[AndOr] = []

    def peek() -> Token | None:
        return tokens[pos] if pos < len(tokens) else None

    def parse_command() -> Command:
        nonlocal pos
        assignments: list[tuple[str, Word]] = []
        args: list[Word] = []
        redirects: list[Redirect] = []
        while (tok := peek()) is not None:
            if tok.kind == "op":
                value = tok.value
                fd_op = re.fullmatch(r"(\d?)(>>|>&|>|<|&>)", value)
                if not fd_op:
                    break
                pos += 1
                target = peek()
                if target is None or target.kind != "word" or target.word is None:
                    raise ShellSyntaxError(f"syntax error: '{value}' unexpected")
                pos += 1
                fd_text, op = fd_op.groups()
                if op == "&>":
                    redirects.append(Redirect(1, ">", target.word))
                    redirects.append(Redirect(2, ">&", Word((Part("1"),))))
                    continue
                fd = int(fd_text) if fd_text else (0 if op == "<" else 1)
                redirects.append(Redirect(fd, op, target.word))
                continue
            assert tok.word is not None
            first = tok.word.parts[0].text if tok.word.parts and not tok.word.parts[0].is_var else ""
            if not args and "=" in first and _NAME.fullmatch(first.split("=", 1)[0]):
                name, rest = first.split("=", 1)
                value_parts = ((Part(rest),) if rest else ()) + tok.word.parts[1:]
                assignments.append((name, Word(value_parts)))
            else:
                args.append(tok.word)
            pos += 1
        return Command(tuple(assignments), tuple(args), tuple(redirects))

    def parse_pipeline() -> tuple[Command, ...]:
        nonlocal pos
        commands = [parse_command()]
        while (tok := peek()) is not None and tok.kind == "op" and tok.value == "|":
            pos += 1
            commands.append(parse_command())
        for command in commands:
            if not command.args and not command.assignments and not command.redirects:
                raise ShellSyntaxError("syntax error: '|' unexpected")
        return tuple(commands)

    while pos < len(tokens):
        tok = peek()
        if tok is not None and tok.kind == "op" and tok.value in (";", "\n", "&"):
            pos += 1
            continue
        first = parse_pipeline()
        rest: list[tuple[str, tuple[Command, ...]]] = []
        while (tok := peek()) is not None and tok.kind == "op" and tok.value in ("&&", "||"):
            pos += 1
            while (nl := peek()) is not None and nl.kind == "op" and nl.value == "\n":
                pos += 1
            rest.append((tok.value, parse_pipeline()))
        result.append(AndOr(first, tuple(rest)))
        tok = peek()
        if tok is not None:
            if tok.kind == "op" and tok.value in (";", "\n", "&"):
                pos += 1
            else:
                raise ShellSyntaxError(f"syntax error: '{tok.value}' unexpected")
    return result


# --- running -------------------------------------------------------------------------------------------------

Writer = Callable[[bytes], None]


@dataclass
class CommandContext:
    """What one command sees: its arguments, environment, input and where its output goes."""

    phone: VirtualPhone
    args: list[str]
    env: dict[str, str]
    stdin: bytes
    out: Writer
    err: Writer
    hangup: threading.Event

    def print(self, text: str = "", end: str = "\n") -> None:
        self.out((text + end).encode())

    def error(self, text: str) -> None:
        self.err((text + "\n").encode())


CommandFn = Callable[[CommandContext], int]


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


@dataclass
class Shell:
    """One shell session on a phone. ``hangup`` is set by the adb stream when the client goes away (or adbd
    dies), which ends long-running commands such as ``app_process`` and ``logcat``."""

    phone: VirtualPhone
    hangup: threading.Event = field(default_factory=threading.Event)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        base = {"PATH": "/sbin:/system/sbin:/system/bin:/system/xbin:/vendor/bin", "HOME": "/",
                "USER": "shell", "SHELL": SH, "ANDROID_DATA": "/data", "ANDROID_ROOT": "/system",
                "EXTERNAL_STORAGE": "/sdcard", "TMPDIR": "/data/local/tmp", "?": "0", "$": "4242", "#": "0",
                "0": SH}
        base.update(self.env)
        self.env = base

    def run(self, line: str, out: Writer, err: Writer) -> int:
        """Run a command line; returns its exit status (like ``sh -c``)."""
        try:
            program = parse(line)
        except ShellSyntaxError as exc:
            err(f"{SH}: {exc}\n".encode())
            self.env["?"] = "2"
            return 2
        try:
            for and_or in program:
                status = self._run_pipeline(and_or.first, out, err)
                for op, pipeline in and_or.rest:
                    if (op == "&&" and status == 0) or (op == "||" and status != 0):
                        status = self._run_pipeline(pipeline, out, err)
                self.env["?"] = str(status)
        except _Exit as exc:
            self.env["?"] = str(exc.code)
        return int(self.env["?"])

    def _run_pipeline(self, pipeline: tuple[Command, ...], out: Writer, err: Writer) -> int:
        data = b""
        status = 0
        for index, command in enumerate(pipeline):
            last = index == len(pipeline) - 1
            chunks: list[bytes] = []
            status = self._run_command(command, data, out if last else chunks.append, err)
            data = b"".join(chunks)
        return status

    def _run_command(self, command: Command, stdin: bytes, out: Writer, err: Writer) -> int:
        env = self.env
        args = [word.expand(env) for word in command.args]
        if not args:
            for name, word in command.assignments:
                env[name] = word.expand(env)
            return 0
        local_env = dict(env)
        for name, word in command.assignments:
            local_env[name] = word.expand(env)
        targets: dict[int, Writer] = {1: out, 2: err}
        for redirect in command.redirects:
            target = redirect.target.expand(env)
            if redirect.op == "<":
                try:
                    stdin = self.phone.fs.read(target)
                except OSError:
                    err(f"{SH}: can't open '{target}': No such file or directory\n".encode())
                    return 1
            elif redirect.op == ">&":
                if target in ("1", "2"):
                    targets[redirect.fd] = targets[int(target)]
            elif target == "/dev/null":
                targets[redirect.fd] = _discard
            else:
                if not self.phone.fs.writable(target):
                    err(f"{SH}: can't create {target}: Read-only file system\n".encode())
                    return 1
                if redirect.op == ">":
                    try:
                        self.phone.fs.write(target, b"")
                    except OSError:
                        err(f"{SH}: can't create {target}: Is a directory\n".encode())
                        return 1
                targets[redirect.fd] = _appender(self.phone, target)
        ctx = CommandContext(self.phone, args, local_env, stdin, targets[1], targets[2], self.hangup)
        name = args[0]
        if name == "exit":
            code = int(args[1]) if len(args) > 1 and args[1].lstrip("-").isdigit() else int(env.get("?", "0"))
            raise _Exit(code & 0xFF)
        if name == "export":
            for item in args[1:]:
                if "=" in item:
                    key, value = item.split("=", 1)
                    env[key] = value
            return 0
        fn = COMMANDS.get(name.rsplit("/", 1)[-1] if name.startswith("/system/bin/") else name)
        if fn is None:
            err(f"{SH}: {name}: inaccessible or not found\n".encode())
            return EX_NOT_FOUND
        try:
            return fn(ctx)
        except _Exit:
            raise
        except (ValueError, IndexError):
            ctx.error(f"{name}: bad arguments")  # not echoed: they may hold a PIN
            return EX_USAGE
        except OSError as exc:
            ctx.error(f"{name}: {exc.strerror or exc}")
            return 1


def _discard(_: bytes) -> None:
    return None


def _appender(phone: VirtualPhone, path: str) -> Writer:
    def write(data: bytes) -> None:
        phone.fs.write(path, data, append=True)
    return write


# --- commands ------------------------------------------------------------------------------------------------

COMMANDS: dict[str, CommandFn] = {}


def command(*names: str) -> Callable[[CommandFn], CommandFn]:
    def register(fn: CommandFn) -> CommandFn:
        for name in names:
            COMMANDS[name] = fn
        return fn
    return register


@command("sh")
def _sh(ctx: CommandContext) -> int:
    """``sh -c 'CMD'``: a child shell, so ``exit`` in it ends only the child."""
    if len(ctx.args) >= 3 and ctx.args[1] == "-c":
        child = Shell(ctx.phone, ctx.hangup, env={k: v for k, v in ctx.env.items() if k not in ("?",)})
        return child.run(ctx.args[2], ctx.out, ctx.err)
    ctx.error("sh: only 'sh -c COMMAND' is supported")
    return 2


@command("true")
def _true(ctx: CommandContext) -> int:
    return 0


@command("false")
def _false(ctx: CommandContext) -> int:
    return 1


@command("echo")
def _echo(ctx: CommandContext) -> int:
    args = ctx.args[1:]
    newline = True
    if args and args[0] == "-n":
        newline = False
        args = args[1:]
    ctx.print(" ".join(args), end="\n" if newline else "")
    return 0


@command("sleep")
def _sleep(ctx: CommandContext) -> int:
    seconds = min(float(ctx.args[1]), MAX_SLEEP_S)
    ctx.hangup.wait(seconds)
    return 0


@command("id")
def _id(ctx: CommandContext) -> int:
    ctx.print("uid=2000(shell) gid=2000(shell) groups=2000(shell),1004(input),1007(log),1011(adb),1015(sdcard_rw),"
              "3003(inet) context=u:r:shell:s0")
    return 0


@command("whoami")
def _whoami(ctx: CommandContext) -> int:
    ctx.print("shell")
    return 0


@command("uname")
def _uname(ctx: CommandContext) -> int:
    if "-a" in ctx.args:
        ctx.print("Linux localhost 4.9.112-virtual #1 SMP PREEMPT aarch64 Toybox")
    else:
        ctx.print("Linux")
    return 0


@command("date")
def _date(ctx: CommandContext) -> int:
    if len(ctx.args) > 1 and ctx.args[1] == "+%s":
        ctx.print(str(int(time.time())))
    else:
        ctx.print(time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()))
    return 0


#: ``setprop phonehome.fault.getprop NAME``: reading that property fails (a rehearsed fault)
GETPROP_FAULT_PROP = "phonehome.fault.getprop"


@command("getprop")
def _getprop(ctx: CommandContext) -> int:
    if len(ctx.args) > 1 and ctx.args[1] and ctx.phone.getprop(GETPROP_FAULT_PROP) == ctx.args[1]:
        ctx.error(f"getprop: failed to read {ctx.args[1]}: Connection refused (property service)")
        return 1
    if len(ctx.args) == 1:
        for line in iter_props(ctx.phone.all_props()):
            ctx.print(line)
        return 0
    value = ctx.phone.getprop(ctx.args[1])
    if not value and len(ctx.args) > 2:
        value = ctx.args[2]
    ctx.print(value)
    return 0


@command("setprop")
def _setprop(ctx: CommandContext) -> int:
    if len(ctx.args) != 3:
        ctx.error("usage: setprop NAME VALUE")
        return 1
    if not ctx.phone.setprop(ctx.args[1], ctx.args[2]):
        ctx.error(f"Failed to set property '{ctx.args[1]}' to '{ctx.args[2]}'.\n"
                  "See dmesg for error reason.")
        return 1
    return 0


@command("locksettings")
def _locksettings(ctx: CommandContext) -> int:
    """``locksettings clear --old CREDENTIAL`` and ``locksettings set-pin [--old CREDENTIAL] PIN``, as Android's
    LockSettingsShellCommand: how a lab changes a phone's lock over adb (and rehearses a lock the inventory does
    not describe)."""
    args = ctx.args[1:]
    old = None
    if "--old" in args:
        at = args.index("--old")
        old = args[at + 1] if at + 1 < len(args) else ""
        args = args[:at] + args[at + 2:]
    if args == ["get-disabled"]:
        ctx.print("true" if ctx.phone.spec.unlock_method == "none" else "false")
        return 0
    if not args or args[0] not in ("clear", "set-pin"):
        ctx.error("usage: locksettings get-disabled | clear --old CREDENTIAL | set-pin [--old CREDENTIAL] PIN")
        return 1
    new_pin = args[1] if args[0] == "set-pin" and len(args) > 1 else None
    if args[0] == "set-pin" and (new_pin is None or not new_pin.isdigit()):
        ctx.error("usage: locksettings set-pin [--old CREDENTIAL] PIN (digits)")
        return 1
    if not ctx.phone.change_lock(old, new_pin):
        ctx.print(f"Old password '{old or ''}' didn't match")
        return 255
    ctx.print("Lock credential cleared" if new_pin is None else f"Pin set to '{new_pin}'")
    return 0


@command("settings")
def _settings(ctx: CommandContext) -> int:
    args = [a for a in ctx.args[1:] if not a.startswith("--user")]
    if args and args[0] == "current":
        args = args[1:]
    if len(args) < 2 or args[1] not in ("system", "secure", "global"):
        ctx.error("usage:  settings [--user <USER_ID> | current] get namespace key\n"
                  "        settings [--user <USER_ID> | current] put namespace key value")
        return 255 if args else 1
    verb, namespace = args[0], args[1]
    if verb == "get" and len(args) >= 3:
        value = ctx.phone.settings_get(namespace, args[2])
        ctx.print("null" if value is None else value)
        return 0
    if verb == "put" and len(args) >= 4:
        ctx.phone.settings_put(namespace, args[2], args[3])
        return 0
    if verb == "delete" and len(args) >= 3:
        deleted = ctx.phone.settings_delete(namespace, args[2])
        ctx.print(f"Deleted {1 if deleted else 0} rows")
        return 0
    if verb == "list":
        for key, value in ctx.phone.settings_list(namespace).items():
            ctx.print(f"{key}={value}")
        return 0
    ctx.error(f"Invalid command: {verb}")
    return 255


@command("cat")
def _cat(ctx: CommandContext) -> int:
    if len(ctx.args) == 1:
        ctx.out(ctx.stdin)
        return 0
    status = 0
    from phonehome.virtual.phone import WLAN_MAC_PATH
    for path in ctx.args[1:]:
        if ctx.phone.fs.normalize(path) == WLAN_MAC_PATH and not ctx.phone.wlan_mac_readable():
            ctx.error(f"cat: {path}: Permission denied")
            status = 1
            continue
        try:
            ctx.out(ctx.phone.fs.read(path))
        except IsADirectoryError:
            ctx.error(f"cat: {path}: Is a directory")
            status = 1
        except OSError:
            ctx.error(f"cat: {path}: No such file or directory")
            status = 1
    return status


@command("md5sum")
def _md5sum(ctx: CommandContext) -> int:
    status = 0
    for path in ctx.args[1:]:
        if path.startswith("-"):
            continue
        try:
            data = ctx.phone.fs.read(path)
        except IsADirectoryError:
            ctx.error(f"md5sum: {path}: Is a directory")
            status = 1
            continue
        except OSError:
            ctx.error(f"md5sum: {path}: No such file or directory")
            status = 1
            continue
        ctx.print(f"{hashlib.md5(data).hexdigest()}  {path}")
    return status


@command("toybox")
def _toybox(ctx: CommandContext) -> int:
    if len(ctx.args) < 2:
        ctx.print(" ".join(sorted(TOYBOX_APPLETS)))
        return 0
    applet = ctx.args[1]
    fn = COMMANDS.get(applet) if applet in TOYBOX_APPLETS else None
    if fn is None:
        ctx.error(f"toybox: Unknown command {applet}")
        return 1
    ctx.args = ctx.args[1:]
    return fn(ctx)


@command("ls")
def _ls(ctx: CommandContext) -> int:
    flags = "".join(a[1:] for a in ctx.args[1:] if a.startswith("-"))
    paths = [a for a in ctx.args[1:] if not a.startswith("-")] or ["/"]
    status = 0
    for path in paths:
        st = ctx.phone.fs.stat(path)
        if not st.exists:
            ctx.error(f"ls: {path}: No such file or directory")
            status = 1
            continue
        entries = ctx.phone.fs.listdir(path) if st.is_dir else [(path, st)]
        for name, entry in entries:
            if name in (".", "..") and "a" not in flags:
                continue
            if "l" in flags:
                kind = "d" if entry.is_dir else "-"
                stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.mtime))
                ctx.print(f"{kind}rw-rw-rw- 1 shell shell {entry.size:>8} {stamp} {name}")
            else:
                ctx.print(name)
    return status


@command("rm")
def _rm(ctx: CommandContext) -> int:
    flags = "".join(a[1:] for a in ctx.args[1:] if a.startswith("-"))
    status = 0
    for path in (a for a in ctx.args[1:] if not a.startswith("-")):
        try:
            ctx.phone.fs.remove(path, recursive="r" in flags or "R" in flags)
        except FileNotFoundError:
            if "f" not in flags:
                ctx.error(f"rm: {path}: No such file or directory")
                status = 1
        except IsADirectoryError:
            ctx.error(f"rm: {path}: Is a directory")
            status = 1
        except PermissionError:
            ctx.error(f"rm: {path}: Permission denied")
            status = 1
    return status


@command("mkdir")
def _mkdir(ctx: CommandContext) -> int:
    parents = "-p" in ctx.args
    status = 0
    for path in (a for a in ctx.args[1:] if not a.startswith("-")):
        try:
            ctx.phone.fs.mkdir(path, parents=parents)
        except FileExistsError:
            ctx.error(f"mkdir: '{path}': File exists")
            status = 1
        except (PermissionError, FileNotFoundError):
            ctx.error(f"mkdir: '{path}': Permission denied")
            status = 1
    return status


@command("grep")
def _grep(ctx: CommandContext) -> int:
    flags = ""
    rest: list[str] = []
    for arg in ctx.args[1:]:
        if arg.startswith("-") and len(arg) > 1 and not rest:
            flags += arg[1:]
        else:
            rest.append(arg)
    if not rest:
        ctx.error("usage: grep [-ivcqE] PATTERN [FILE...]")
        return 2
    pattern = rest[0] if "E" in flags else _basic_regex(rest[0])
    regex = re.compile(pattern, re.IGNORECASE if "i" in flags else 0)
    text = ctx.stdin
    if len(rest) > 1:
        try:
            text = b"".join(ctx.phone.fs.read(p) for p in rest[1:])
        except OSError:
            ctx.error(f"grep: {rest[1]}: No such file or directory")
            return 2
    lines = text.decode(errors="replace").splitlines()
    hits = [line for line in lines if bool(regex.search(line)) != ("v" in flags)]
    if "q" not in flags:
        if "c" in flags:
            ctx.print(str(len(hits)))
        else:
            for line in hits:
                ctx.print(line)
    return 0 if hits else 1


def _basic_regex(pattern: str) -> str:
    """grep's basic regular expressions: ``\\|`` is alternation, ``|`` ``+`` ``?`` ``(`` are literal."""
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "|()+?{}":
            out.append(pattern[i + 1])
            i += 2
            continue
        out.append("\\" + ch if ch in "|()+?{}" else ch)
        i += 1
    return "".join(out)


@command("head", "tail")
def _head_tail(ctx: CommandContext) -> int:
    count = 10
    args = ctx.args[1:]
    if args and args[0] == "-n" and len(args) > 1:
        count = int(args[1])
    elif args and args[0].startswith("-") and args[0][1:].isdigit():
        count = int(args[0][1:])
    lines = ctx.stdin.decode(errors="replace").splitlines()
    chosen = lines[:count] if ctx.args[0] == "head" else lines[-count:] if count else []
    for line in chosen:
        ctx.print(line)
    return 0


@command("wc")
def _wc(ctx: CommandContext) -> int:
    text = ctx.stdin.decode(errors="replace")
    if "-l" in ctx.args:
        ctx.print(str(text.count("\n")))
    else:
        ctx.print(f"{text.count(chr(10))} {len(text.split())} {len(ctx.stdin)}")
    return 0


@command("ps")
def _ps(ctx: CommandContext) -> int:
    ctx.print("USER           PID  PPID     VSZ    RSS WCHAN            ADDR S NAME")
    ctx.print("root             1     0   30000   4000 SyS_epoll_wait      0 S init")
    ctx.print("root           600     1 4200000  90000 poll_schedule_timeout 0 S zygote64")
    for name, pid in ctx.phone.running_apps().items():
        user = "system" if name in ("system_server", "com.android.systemui", "com.android.phone") else "u0_a42"
        ctx.print(f"{user:<12} {pid:5d}   600 4500000 120000 SyS_epoll_wait      0 S {name}")
    return 0


@command("pidof")
def _pidof(ctx: CommandContext) -> int:
    pids = [str(pid) for name, pid in ctx.phone.running_apps().items() if name in ctx.args[1:]]
    if pids:
        ctx.print(" ".join(pids))
        return 0
    return 1


#: ``setprop phonehome.fault.dumpsys SERVICE``: that service's dump fails, as a hung or crashed service's does
#: (a rehearsed fault)
DUMPSYS_FAULT_PROP = "phonehome.fault.dumpsys"


@command("dumpsys")
def _dumpsys(ctx: CommandContext) -> int:
    if len(ctx.args) >= 2 and ctx.args[1] and ctx.phone.getprop(DUMPSYS_FAULT_PROP) == ctx.args[1]:
        ctx.error(f"Error dumping service info: (Transaction failed on small parcel; remote process probably "
                  f"died) {ctx.args[1]}")
        return 1
    if len(ctx.args) < 2:
        ctx.print("Currently running services:")
        for name in sorted(DUMPSYS):
            ctx.print(f"  {name}")
        return 0
    service = ctx.args[1]
    fn = DUMPSYS.get(service)
    if fn is None:
        ctx.error(f"Can't find service: {service}")
        return 0
    ctx.print("\n".join(fn(ctx.phone, ctx.args[2:])))
    return 0


def _dump_display(phone: VirtualPhone, args: list[str]) -> list[str]:
    width, height = phone.display_size
    rot = phone.rotation
    state = "ON" if phone.screen_on else "OFF"
    return [
        "DISPLAY MANAGER (dumpsys display)",
        "  mOnlyCode=false",
        "  mSafeMode=false",
        "  mPendingTraversal=false",
        f"  mGlobalDisplayState={state}",
        f"  mViewports=[DisplayViewport{{type=INTERNAL, valid=true, displayId=0, uniqueId='local:0', "
        f"orientation={rot}, logicalFrame=Rect(0, 0 - {width}, {height}), physicalFrame=Rect(0, 0 - {width}, "
        f"{height}), deviceWidth={width}, deviceHeight={height}}}]",
        "  mDefaultDisplayDefaultModeId=1",
        "Display Devices: size=1",
        f"  DisplayDeviceInfo{{\"Built-in Screen\": uniqueId=\"local:0\", {width} x {height}, modeId 1, "
        f"density {phone.density}, {phone.density}.0 x {phone.density}.0 dpi, touch INTERNAL, rotation {rot}, "
        f"type BUILT_IN, state {state}}}",
        f"  mBaseDisplayInfo=DisplayInfo{{\"Built-in Screen\", uniqueId \"local:0\", app {width} x {height}, "
        f"real {width} x {height}, rotation {rot}, density {phone.density}, state {state}}}",
        f"  mCurrentOrientation={rot}",
    ]


def _dump_activity(phone: VirtualPhone, args: list[str]) -> list[str]:
    package, activity = phone.foreground_activity
    resumed_pkg, resumed_act = phone.resumed_activity
    pids = phone.running_apps()
    pid = pids.get(package, pids.get(resumed_pkg, 0))
    short = activity[len(package):] if activity.startswith(package + ".") else activity
    section = args[0] if args else ""
    top = [
        "TASK 17 id=5 userId=0",
        f"  ACTIVITY {package}/{short} 3f4a5b6 pid={pid}",
    ]
    activities = [
        "ACTIVITY MANAGER ACTIVITIES (dumpsys activity activities)",
        "Display #0 (activities from top to bottom):",
        "  Stack #1: type=standard mode=fullscreen",
        f"    mResumedActivity: ActivityRecord{{3f4a5b6 u0 {package}/{short} t17}}",
        f"  ResumedActivity:ActivityRecord{{3f4a5b6 u0 {package}/{short} t17}}",
        f"  mFocusedActivity: ActivityRecord{{3f4a5b6 u0 {resumed_pkg}/{resumed_act} t5}}",
    ]
    if section == "top":
        return top
    if section in ("activities", "a"):
        return activities
    return [*activities, "", *top]


def _dump_trust(phone: VirtualPhone, args: list[str]) -> list[str]:
    locked = 1 if phone.locked else 0
    secure = phone.spec.unlock_method in ("pin", "password")
    return ["Trust manager state:",
            f' User "Owner" (id=0, flags=0x13) (current): trusted=0, trustManaged=0, deviceLocked={locked}, '
            f"strongAuthRequired=0x{1 if secure and locked else 0}",
            "   Enabled agents:", "   Events:"]


def _dump_battery(phone: VirtualPhone, args: list[str]) -> list[str]:
    return ["Current Battery Service state:", "  AC powered: false", "  USB powered: true",
            "  Wireless powered: false", "  Max charging current: 500000", "  status: 2", "  health: 2",
            "  present: true", "  level: 87", "  scale: 100", "  voltage: 4123", "  temperature: 285",
            "  technology: Li-ion"]


def _dump_package(phone: VirtualPhone, args: list[str]) -> list[str]:
    package = args[0] if args else ""
    if package not in phone.installed_packages():
        return [f"Unable to find package: {package}"] if package else ["Packages:"]
    return ["Packages:", f"  Package [{package}] (4a5b6c7):", f"    codePath=/system/app/{package}",
            "    versionCode=1 minSdk=21 targetSdk=28", "    versionName=1.0", "    timeStamp=2019-01-01 00:00:00",
            "    firstInstallTime=2019-01-01 00:00:00", "    lastUpdateTime=2019-01-01 00:00:00"]


DUMPSYS: dict[str, Callable[[VirtualPhone, list[str]], list[str]]] = {
    "power": dump_power, "window": dump_window, "display": _dump_display, "location": dump_location,
    "iphonesubinfo": dump_iphonesubinfo, "activity": _dump_activity, "battery": _dump_battery,
    "trust": _dump_trust,
    "package": _dump_package, "telephony.registry": dump_telephony_registry, "wifi": dump_wifi,
}


def _keycode(name: str) -> int:
    """A key code from a number (``66``) or a name with or without ``KEYCODE_`` (``ENTER``, ``KEYCODE_HOME``)."""
    if name.isdigit():
        return int(name)
    upper = name.upper().removeprefix("KEYCODE_")
    if upper in KEYCODES:
        return KEYCODES[upper]
    raise ValueError(name)


@command("input")
def _input(ctx: CommandContext) -> int:
    args = ctx.args[1:]
    sources = ("touchscreen", "keyboard", "mouse", "touchpad", "dpad", "gamepad", "trackball", "stylus")
    if args and args[0] in sources:
        args = args[1:]
    if not args:
        ctx.error("Usage: input [<source>] <command> [<arg>...]")
        return 1
    verb, rest = args[0], args[1:]
    phone = ctx.phone
    if verb == "keyevent":
        longpress = "--longpress" in rest
        for key in (r for r in rest if not r.startswith("--")):
            try:
                code = _keycode(key)
            except ValueError:
                ctx.error(f"Error: Unknown keycode {key}")
                return 1
            phone.press_key(code, longpress=longpress)
        return 0
    if verb == "text":
        if not rest:
            ctx.error("Error: text missing")
            return 1
        phone.type_text(" ".join(rest).replace("%s", " "))
        return 0
    if verb in ("swipe", "draganddrop"):
        x1, y1, x2, y2 = (int(float(v)) for v in rest[:4])
        phone.swipe(x1, y1, x2, y2)
        return 0
    if verb == "tap":
        x, y = (int(float(v)) for v in rest[:2])
        phone.tap(x, y)
        return 0
    if verb == "press":
        phone.press_key(KEYCODES["DPAD_CENTER"])
        return 0
    ctx.error(f"Error: Unknown command: {verb}")
    return 1


@command("wm")
def _wm(ctx: CommandContext) -> int:
    args = ctx.args[1:]
    phone = ctx.phone
    if not args:
        ctx.error("usage: wm [size|density|dismiss-keyguard] ...")
        return 1
    if args[0] == "size":
        if len(args) > 1:
            if args[1] == "reset":
                phone.set_display(reset=True)
            else:
                w, h = args[1].lower().split("x")
                phone.set_display(size=(int(w), int(h)))
            return 0
        ctx.print(f"Physical size: {phone.spec.screen[0]}x{phone.spec.screen[1]}")
        if phone.display_size != phone.spec.screen:
            ctx.print(f"Override size: {phone.display_size[0]}x{phone.display_size[1]}")
        return 0
    if args[0] == "density":
        if len(args) > 1:
            if args[1] == "reset":
                phone.set_display(reset=True)
            else:
                phone.set_display(density=int(args[1]))
            return 0
        ctx.print(f"Physical density: {phone.spec.density}")
        if phone.density != phone.spec.density:
            ctx.print(f"Override density: {phone.density}")
        return 0
    if args[0] == "dismiss-keyguard":
        phone.dismiss_keyguard()
        return 0
    ctx.error(f"Error: unknown command '{args[0]}'")
    return 1


def _intent_component(args: list[str]) -> tuple[str | None, str | None, str | None]:
    """(package, activity, data uri) from ``am start`` arguments."""
    options = {flag: value for flag, value in itertools.pairwise(args) if flag in ("-n", "-d", "-a")}
    component, data, action = options.get("-n"), options.get("-d"), options.get("-a")
    if component and "/" in component:
        package, activity = component.split("/", 1)
        return package, activity, data
    if action == "android.intent.action.VIEW" and data:
        return "com.android.chrome", "com.google.android.apps.chrome.Main", data
    return None, None, data


@command("am")
def _am(ctx: CommandContext) -> int:
    args = ctx.args[1:]
    phone = ctx.phone
    if not args:
        ctx.error("usage: am [start|force-stop|broadcast|kill] ...")
        return 1
    verb = args[0]
    if verb in ("start", "start-activity"):
        package, activity, data = _intent_component(args[1:])
        if package is None:
            ctx.print("Starting: Intent { }")
            ctx.error("Error: Activity not started, unable to resolve Intent")
            return 1
        ctx.print(f"Starting: Intent {{ cmp={package}/{activity}{' dat=' + data if data else ''} }}")
        if not phone.start_app(package, activity):
            ctx.error(f"Error type 3\nError: Activity class {{{package}/{activity}}} does not exist.")
            return 1
        return 0
    if verb == "force-stop" and len(args) > 1:
        phone.stop_app(args[-1])
        return 0
    if verb == "kill" and len(args) > 1:
        phone.stop_app(args[-1])
        return 0
    if verb == "broadcast":
        action = args[args.index("-a") + 1] if "-a" in args[:-1] else ""
        ctx.print(f"Broadcasting: Intent {{ act={action} flg=0x400000 }}")
        ctx.print("Broadcast completed: result=0")
        phone.log("I", "ActivityManager", f"broadcast {action} from shell")
        return 0
    ctx.error(f"Error: Unknown command: {verb}")
    return 1


@command("monkey")
def _monkey(ctx: CommandContext) -> int:
    args = ctx.args[1:]
    package = args[args.index("-p") + 1] if "-p" in args[:-1] else None
    if package is None or package not in ctx.phone.installed_packages():
        ctx.print("  bash arg: -p")
        ctx.error("** No activities found to run, monkey aborted.")
        return 252
    ctx.phone.start_app(package, f"{package}.MainActivity" if package != LAUNCHER else LAUNCHER_ACTIVITY)
    ctx.print("  bash arg: -p")
    ctx.print(f"  bash arg: {package}")
    ctx.print("Events injected: 1")
    ctx.print("## Network stats: elapsed time=12ms (0ms mobile, 0ms wifi, 12ms not connected)")
    return 0


@command("pm")
def _pm(ctx: CommandContext) -> int:
    args = ctx.args[1:]
    phone = ctx.phone
    if not args:
        ctx.error("usage: pm [list|path|clear|grant|revoke] ...")
        return 1
    verb = args[0]
    if verb == "list" and len(args) > 1 and args[1] == "packages":
        options = [a for a in args[2:] if a.startswith("-")]
        needle = next((a for a in args[2:] if not a.startswith("-")), "")
        third_party = "-3" in options
        uids = phone.package_uids() if "-U" in options else {}  # -U: " uid:N", as AOSP's runListPackages
        for package in phone.installed_packages():
            if third_party and package in _SYSTEM_ONLY:
                continue
            if needle in package:
                prefix = f"package:/system/app/{package}/{package}.apk=" if "-f" in options else "package:"
                ctx.print(prefix + package + (f" uid:{uids[package]}" if package in uids else ""))
        return 0
    if verb == "path" and len(args) > 1:
        if args[1] not in phone.installed_packages():
            return 1
        ctx.print(f"package:/system/app/{args[1]}/{args[1]}.apk")
        return 0
    if verb == "clear" and len(args) > 1:
        phone.stop_app(args[-1])
        ctx.print("Success")
        return 0
    if verb in ("grant", "revoke", "enable", "disable", "disable-user"):
        return 0
    ctx.error(f"Error: unknown command '{verb}'")
    return 1


_SYSTEM_ONLY = frozenset(("android", "com.android.systemui", LAUNCHER, "com.android.settings", "com.android.phone",
                          "com.android.providers.settings"))


def parcel_dump(data: bytes) -> str:
    """Format a Parcel as ``service call`` prints it: 16 bytes a line as little-endian 32-bit words + ASCII."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset:offset + 16]
        words = [int.from_bytes(chunk[i:i + 4], "little") for i in range(0, len(chunk), 4)]
        hex_part = " ".join(f"{w:08x}" for w in words) + " " * (9 * (4 - len(words)))
        ascii_part = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk).ljust(16)
        lines.append(f"  0x{offset:08x}: {hex_part} '{ascii_part}'")
    if not lines:
        return "Result: Parcel(NULL)"
    lines[-1] += ")"
    return "Result: Parcel(\n" + "\n".join(lines)


def parcel_string16(text: str | None) -> bytes:
    """A String16 in a Parcel: int32 length (-1 for null), UTF-16LE characters, NUL, padding to 4 bytes."""
    if text is None:
        return (0xFFFFFFFF).to_bytes(4, "little")
    body = text.encode("utf-16-le") + b"\x00\x00"
    body += b"\x00" * (-len(body) % 4)
    return len(text).to_bytes(4, "little") + body


def iphonesubinfo_parcel(phone: VirtualPhone, code: int) -> bytes:
    """The reply Parcel of one IPhoneSubInfo transaction: the value, a null, or a SecurityException."""
    name = iphonesubinfo_codes(phone.spec.sdk).get(code)
    if name is None:
        return (0).to_bytes(4, "little") + parcel_string16(None)
    if phone.spec.sdk >= PRIVILEGED_IDS_SDK and not phone.spec.rooted:
        message = ("getDeviceId: The user 2000 does not meet the requirements to access device identifiers."
                   if name == "imei" else
                   "getSubscriberId: The user 2000 does not meet the requirements to access device identifiers.")
        ex_security = (-1).to_bytes(4, "little", signed=True)
        return ex_security + parcel_string16(message) + (0).to_bytes(4, "little")
    values = phone.identifiers_all(name)
    index = 1 if name == "imei" and code in (2, 4) and len(values) > 1 and phone.spec.sdk < PRIVILEGED_IDS_SDK \
        else 0
    value = values[index] if values else None
    if name == "phone" and value is not None:
        value = "".join(ch for ch in value if ch.isdigit() or ch == "+")
    return (0).to_bytes(4, "little") + parcel_string16(value)


@command("service")
def _service(ctx: CommandContext) -> int:
    args = ctx.args[1:]
    if args and args[0] == "list":
        ctx.print("Found 3 services:")
        ctx.print("0\tiphonesubinfo: [com.android.internal.telephony.IPhoneSubInfo]")
        ctx.print("1\twindow: [android.view.IWindowManager]")
        ctx.print("2\tpower: [android.os.IPowerManager]")
        return 0
    if args and args[0] == "check" and len(args) > 1:
        found = args[1] in ("iphonesubinfo", "window", "power")
        ctx.print(f"Service {args[1]}: {'found' if found else 'not found'}")
        return 0
    if len(args) >= 3 and args[0] == "call":
        if args[1] != "iphonesubinfo":
            ctx.print(f"service: Service {args[1]} does not exist")
            return 0
        ctx.print(parcel_dump(iphonesubinfo_parcel(ctx.phone, int(args[2]))))
        return 0
    ctx.error("Usage: service [-h|-?]\n       service list\n       service check SERVICE\n"
              "       service call SERVICE CODE [i32 N | i64 N | f N | d N | s16 STR ] ...")
    return 1


@command("screencap")
def _screencap(ctx: CommandContext) -> int:
    files = [a for a in ctx.args[1:] if not a.startswith("-")]
    png = ctx.phone.screenshot("PNG")
    if files:
        try:
            ctx.phone.fs.write(files[0], png)
        except OSError:
            ctx.error(f"Error opening file: {files[0]} (Permission denied)")
            return 1
        return 0
    ctx.out(png)
    return 0


@command("logcat")
def _logcat(ctx: CommandContext) -> int:
    args = ctx.args[1:]
    phone = ctx.phone
    if "-c" in args or "--clear" in args:
        phone.clear_log()
        return 0
    dump = "-d" in args
    lines, index = phone.log_lines()
    if "-t" in args[:-1]:  # the last N lines, then exit
        lines = lines[-int(args[args.index("-t") + 1]):]
        dump = True
    if "-T" in args[:-1]:  # a count, or lines since 'sec.nsec' (epoch), as logcat accepts
        since = args[args.index("-T") + 1]
        if since.isdigit():
            lines = lines[-int(since):]
        else:
            lines = [line for line in lines if round(line.when, 3) >= round(float(since), 3)]
    for line in lines:
        ctx.print(line.render())
    if dump:
        return 0
    start_boot = phone.boot_id
    while not ctx.hangup.is_set() and phone.boot_id == start_boot:
        phone.wait_log(index, HANGUP_POLL_S)
        new, index = phone.log_lines(index)
        for line in new:
            ctx.print(line.render())
    return 0


#: a property that makes the running uiautomator2 server on the phone die once (fault rehearsal)
U2_CRASH_PROP = "phonehome.fault.u2_crash"


@command("app_process", "app_process64")
def _app_process(ctx: CommandContext) -> int:
    """Starts the uiautomator2 server if the class is uiautomator2's; it runs until its stream closes."""
    from phonehome.virtual.u2server import U2_MAIN_CLASSES, U2Server

    args = ctx.args[1:]
    classpath = ctx.env.get("CLASSPATH", "")
    main_class = next((a for a in args if not a.startswith("-") and not a.startswith("/")), None)
    if main_class not in U2_MAIN_CLASSES:
        ctx.error(f"Error: Could not find class '{main_class}'" if main_class else
                  "Usage: app_process [java-options] cmd-dir start-class-name [options]")
        return 1
    if not ctx.phone.fs.stat(classpath.split(":")[0]).exists:
        ctx.error(f"Error: Could not find or load main class {main_class} (CLASSPATH {classpath} missing)")
        return 1
    port = int(args[args.index("-p") + 1]) if "-p" in args[:-1] else U2_DEFAULT_PORT
    server = U2Server(ctx.phone, port)
    if not server.start():
        ctx.error("java.lang.IllegalStateException: UiAutomationService "
                  "android.accessibilityservice.IAccessibilityServiceClient$Stub$Proxy@5deffd5already registered!")
        return 1
    ctx.print("[server] INFO: [UiAutomator2Server] Starting Server")
    try:
        start_boot = ctx.phone.boot_id
        while not ctx.hangup.wait(HANGUP_POLL_S):
            if ctx.phone.boot_id != start_boot or not server.running:
                break
            if ctx.phone.getprop(U2_CRASH_PROP) == "1":  # a rehearsed fault: the server dies, once
                ctx.phone.setprop(U2_CRASH_PROP, "")
                ctx.error("java.lang.RuntimeException: uiautomator2 server crashed (phonehome.fault.u2_crash)")
                return 1
    finally:
        server.stop()
    return 0


@command("uiautomator")
def _uiautomator(ctx: CommandContext) -> int:
    """``uiautomator dump [FILE]``: the window hierarchy as the uiautomator2 server dumps it (adbutils uses it)."""
    from phonehome.virtual.u2server import hierarchy_xml

    args = ctx.args[1:]
    if not args or args[0] != "dump":
        ctx.error("Usage: uiautomator dump [--compressed] [file]")
        return 1
    target = next((a for a in args[1:] if not a.startswith("-")), "/sdcard/window_dump.xml")
    try:
        ctx.phone.fs.write(target, hierarchy_xml(ctx.phone).encode())
    except OSError:
        ctx.error(f"ERROR: could not write to {target}")
        return 1
    ctx.print(f"UI hierchary dumped to: {target}")  # sic: Android's spelling
    return 0


@command("reboot")
def _reboot(ctx: CommandContext) -> int:
    """Like on a phone, the shell that asked for the reboot never returns: adbd dies under it."""
    ctx.phone.reboot()
    ctx.hangup.wait(ctx.phone.spec.timings.adbd_linger_s + MAX_SLEEP_S)
    return 0


@command("svc")
def _svc(ctx: CommandContext) -> int:
    args = ctx.args[1:]
    if len(args) >= 2 and args[0] in ("wifi", "data") and args[1] in ("enable", "disable"):
        ctx.phone.set_radio(args[0], args[1] == "enable")
        return 0
    if len(args) >= 2 and args[0] == "power":
        if args[1] == "reboot":
            return _reboot(ctx)
        if args[1] == "stayon":
            ctx.phone.settings_put("global", "stay_on_while_plugged_in",
                                   "0" if len(args) < 3 or args[2] == "false" else "7")
            return 0
        if args[1] == "shutdown":
            ctx.error("svc power shutdown: not supported on a virtual phone, use reboot")
            return 1
    ctx.print("Available commands:\n    data\n    power\n    wifi")
    return 0 if not args else 1


@command("ip")
def _ip(ctx: CommandContext) -> int:
    ip = ctx.phone.spec.wlan_ip
    if ip is None or not ctx.phone.radio("wifi"):
        ctx.error('Device "wlan0" does not exist.')
        return 1
    ctx.print("30: wlan0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc mq state UP group default qlen 3000")
    ctx.print(f"    link/ether {ctx.phone.wlan_mac} brd ff:ff:ff:ff:ff:ff")
    ctx.print(f"    inet {ip}/24 brd {ip.rsplit('.', 1)[0]}.255 scope global wlan0")
    return 0


@command("cmd")
def _cmd(ctx: CommandContext) -> int:
    args = ctx.args[1:]
    if args[:2] == ["statusbar", "collapse"] or args[:2] == ["statusbar", "expand-notifications"]:
        return 0
    if args[:1] == ["package"]:  # `cmd package ...` is what `pm ...` calls on Android 7+
        return _pm(dataclasses.replace(ctx, args=["pm", *args[1:]]))
    ctx.error(f"cmd: Can't find service: {args[0] if args else ''}")
    return 20


TOYBOX_APPLETS = frozenset(("md5sum", "cat", "ls", "rm", "mkdir", "echo", "id", "uname", "date", "ps", "grep",
                            "head", "tail", "wc", "true", "false", "sleep", "whoami", "pidof"))

