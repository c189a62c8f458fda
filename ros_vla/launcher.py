"""A small stand-in for ``ros2 launch`` that runs ROS 2 launch XML files.

``ros2 launch`` is not installable in this environment, so this module covers the
subset of the launch XML format that real packages use:

* parsing (:func:`parse_launch_file`): ``<launch>``, ``<arg>``, ``<let>``, ``<group>``,
  ``<push-ros-namespace>``, ``<include>`` and ``<node>`` (with ``<param>``, ``<remap>``
  and ``<env>`` children), ``if=``/``unless=`` conditions and the substitutions
  ``$(arg)``, ``$(var)``, ``$(env)``, ``$(find-pkg-share)`` and ``$(dirname)``;
* command lines (:func:`build_command`) laid out the way ``ros2 launch`` lays them out;
* supervision (:class:`LaunchRunner`): prefixed output, respawning, and a shutdown that
  escalates SIGINT -> SIGTERM -> SIGKILL and leaves no orphaned process behind.

Two deliberate differences from ``ros2 launch``: relative paths in ``<include file=>``
and ``<param from=>`` are taken relative to the launch file's directory (not the
current directory), and every node's output is shown whatever its ``output=``.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.metadata
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ament_index_python.packages import get_package_prefix, get_package_share_directory

from ros_vla.paths import PACKAGE, package_share, use_project_dds_profile


class LaunchError(Exception):
    """A launch file cannot be parsed, or a node cannot be resolved to a program."""


@dataclass
class NodeSpec:
    """One ``<node>`` of a launch file with every substitution already resolved."""

    pkg: str
    executable: str
    name: str | None = None
    namespace: str = ""  # "" or an absolute namespace such as "/robot"
    parameter_files: list[Path] = field(default_factory=list)
    parameters: dict[str, str] = field(default_factory=dict)
    remaps: list[tuple[str, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    respawn: bool = False
    respawn_delay: float = 0.0
    args: list[str] = field(default_factory=list)
    output: str = "log"


# --------------------------------------------------------------------------- parsing


@dataclass
class _Scope:
    """What an element sees: launch configurations and the pushed namespace.

    ``<group>`` and ``<include>`` work on a copy, so what is set inside them does not
    leak out, while everything set outside (including command-line overrides) is
    visible inside -- the scoping rules of ``ros2 launch``.
    """

    file: Path
    configurations: dict[str, str]
    namespace: str = ""
    include_chain: tuple[Path, ...] = ()

    def child(self) -> _Scope:
        return _Scope(self.file, dict(self.configurations), self.namespace, self.include_chain)


_CONDITION_ATTRIBUTES = {"if", "unless"}
_TRUE_WORDS = {"true", "1"}
_FALSE_WORDS = {"false", "0"}


def parse_launch_file(path: str | os.PathLike, overrides: dict[str, str] | None = None) -> list[NodeSpec]:
    """Parse a launch XML file (and its includes) into the nodes it would start.

    ``overrides`` are launch arguments given on the command line (``name:=value``);
    like in ``ros2 launch`` they take precedence over defaults in every included file.
    """
    path = Path(path).resolve()
    scope = _Scope(path, dict(overrides or {}), include_chain=(path,))
    nodes: list[NodeSpec] = []
    _LaunchFileParser(nodes).parse(path, scope)
    return nodes


class _LaunchFileParser:
    """Walks launch XML elements in document order, appending the nodes it meets."""

    def __init__(self, nodes: list[NodeSpec]):
        self._nodes = nodes
        # Tags allowed directly under <launch> and <group>.
        self._handlers: dict[str, Callable[[ET.Element, _Scope], None]] = {
            "arg": self._declare_argument,
            "let": self._let,
            "group": self._group,
            "push-ros-namespace": self._push_namespace,
            "push_ros_namespace": self._push_namespace,
            "include": self._include,
            "node": self._node,
        }

    def parse(self, path: Path, scope: _Scope) -> None:
        try:
            root = ET.parse(path).getroot()
        except FileNotFoundError:
            raise LaunchError(f"{path}: launch file not found") from None
        except ET.ParseError as error:
            raise LaunchError(f"{path}: invalid XML: {error}") from None
        if root.tag != "launch":
            raise LaunchError(f"{path}: the root element must be <launch>, not <{root.tag}>")
        _check_attributes(root, scope, {"version"})
        self._walk(root, scope)

    def _walk(self, parent: ET.Element, scope: _Scope) -> None:
        for element in parent:
            handler = self._handlers.get(element.tag)
            if handler is None:
                raise _error(scope, parent, f"unknown tag <{element.tag}>")
            if _enabled(element, scope):
                handler(element, scope)

    def _declare_argument(self, element: ET.Element, scope: _Scope) -> None:
        _check_attributes(element, scope, {"name", "default", "description"})
        name = _attribute(element, scope, "name", required=True)
        if name in scope.configurations:  # given on the command line or by an <include>
            return
        default = _attribute(element, scope, "default")
        if default is None:
            description = element.get("description")
            hint = f" ({description})" if description else ""
            raise _error(
                scope, element, f"required launch argument '{name}'{hint} was not given; pass {name}:=VALUE"
            )
        scope.configurations[name] = default

    def _let(self, element: ET.Element, scope: _Scope) -> None:
        _check_attributes(element, scope, {"name", "value"})
        name = _attribute(element, scope, "name", required=True)
        scope.configurations[name] = _attribute(element, scope, "value", required=True)

    def _group(self, element: ET.Element, scope: _Scope) -> None:
        _check_attributes(element, scope, set())
        self._walk(element, scope.child())

    def _push_namespace(self, element: ET.Element, scope: _Scope) -> None:
        _check_attributes(element, scope, {"namespace"})
        # Applies to the rest of the enclosing group (or file), as in ros2 launch.
        scope.namespace = _join_namespace(scope.namespace, _attribute(element, scope, "namespace", required=True))

    def _include(self, element: ET.Element, scope: _Scope) -> None:
        _check_attributes(element, scope, {"file"})
        path = _resolve_path(_attribute(element, scope, "file", required=True), scope)
        if not path.is_file():
            raise _error(scope, element, f"included file {path} does not exist")
        if path.suffix != ".xml":
            raise _error(scope, element, f"cannot include {path}: only XML launch files are supported")
        if path in scope.include_chain:
            raise _error(scope, element, f"{path} includes itself (directly or indirectly)")
        # Argument values are evaluated in the including file, before the include starts.
        arguments = {}
        for child in element:
            if child.tag != "arg":
                raise _error(scope, element, f"unknown tag <{child.tag}> (only <arg> is allowed inside <include>)")
            _check_attributes(child, scope, {"name", "value"})
            if _enabled(child, scope):
                arguments[_attribute(child, scope, "name", required=True)] = _attribute(
                    child, scope, "value", required=True
                )
        included = _Scope(
            path, {**scope.configurations, **arguments}, scope.namespace, scope.include_chain + (path,)
        )
        self.parse(path, included)

    def _node(self, element: ET.Element, scope: _Scope) -> None:
        _check_attributes(
            element, scope, {"pkg", "exec", "name", "namespace", "output", "respawn", "respawn_delay", "args"}
        )
        respawn_delay = _attribute(element, scope, "respawn_delay") or "0"
        try:
            delay = float(respawn_delay)
        except ValueError:
            raise _error(scope, element, f"respawn_delay must be a number, not '{respawn_delay}'") from None
        node = NodeSpec(
            pkg=_attribute(element, scope, "pkg", required=True),
            executable=_attribute(element, scope, "exec", required=True),
            name=_attribute(element, scope, "name"),
            namespace=_join_namespace(scope.namespace, _attribute(element, scope, "namespace") or ""),
            respawn=_truth(_attribute(element, scope, "respawn") or "false", scope, element),
            respawn_delay=delay,
            args=shlex.split(_attribute(element, scope, "args") or ""),
            output=_attribute(element, scope, "output") or "log",
        )
        for child in element:
            if child.tag not in ("param", "remap", "env"):
                raise _error(scope, element, f"unknown tag <{child.tag}> inside <node>")
            if _enabled(child, scope):
                self._add_node_setting(node, child, scope)
        self._nodes.append(node)

    @staticmethod
    def _add_node_setting(node: NodeSpec, element: ET.Element, scope: _Scope) -> None:
        if element.tag == "param":
            _check_attributes(element, scope, {"from", "name", "value"})
            parameter_file = _attribute(element, scope, "from")
            if parameter_file is not None:
                if "name" in element.attrib or "value" in element.attrib:
                    raise _error(scope, element, "use either from= or name=/value=, not both")
                path = _resolve_path(parameter_file, scope)
                if not path.is_file():
                    raise _error(scope, element, f"parameter file {path} does not exist")
                node.parameter_files.append(path)
            else:
                name = _attribute(element, scope, "name", required=True)
                node.parameters[name] = _attribute(element, scope, "value", required=True)
        elif element.tag == "remap":
            _check_attributes(element, scope, {"from", "to"})
            source = _attribute(element, scope, "from", required=True)
            node.remaps.append((source, _attribute(element, scope, "to", required=True)))
        else:  # <env>
            _check_attributes(element, scope, {"name", "value"})
            node.env[_attribute(element, scope, "name", required=True)] = _attribute(
                element, scope, "value", required=True
            )


def _error(scope: _Scope, element: ET.Element, message: str) -> LaunchError:
    return LaunchError(f"{scope.file}: <{element.tag}>: {message}")


def _check_attributes(element: ET.Element, scope: _Scope, allowed: set[str]) -> None:
    # A misspelled attribute would otherwise be silently ignored.
    unknown = sorted(set(element.attrib) - allowed - _CONDITION_ATTRIBUTES)
    if unknown:
        raise _error(scope, element, f"unknown attribute(s) {', '.join(unknown)}")


def _attribute(element: ET.Element, scope: _Scope, key: str, required: bool = False) -> str | None:
    raw = element.get(key)
    if raw is None:
        if required:
            raise _error(scope, element, f"missing required attribute '{key}'")
        return None
    return _substitute(raw, scope, element)


def _enabled(element: ET.Element, scope: _Scope) -> bool:
    if "if" in element.attrib and not _truth(_attribute(element, scope, "if"), scope, element):
        return False
    if "unless" in element.attrib and _truth(_attribute(element, scope, "unless"), scope, element):
        return False
    return True


def _truth(value: str, scope: _Scope, element: ET.Element) -> bool:
    word = value.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise _error(scope, element, f"expected true/false/1/0, got '{value}'")


def _resolve_path(value: str, scope: _Scope) -> Path:
    path = Path(value).expanduser()
    return (path if path.is_absolute() else scope.file.parent / path).resolve()


def _join_namespace(base: str, namespace: str) -> str:
    """``ros2 launch`` namespace rules: relative namespaces nest, absolute ones replace."""
    if namespace.startswith("/"):
        base = ""
    parts = [part for part in f"{base}/{namespace}".split("/") if part]
    return "/" + "/".join(parts) if parts else ""


# ----------------------------------------------------------------- substitutions


def _substitute(text: str, scope: _Scope, element: ET.Element) -> str:
    """Replace every ``$(...)`` in ``text``; substitutions may be nested."""
    pieces = []
    position = 0
    while (start := text.find("$(", position)) >= 0:
        end = _closing_parenthesis(text, start, scope, element)
        pieces.append(text[position:start])
        pieces.append(_evaluate(text[start + 2 : end], scope, element))
        position = end + 1
    pieces.append(text[position:])
    return "".join(pieces)


def _closing_parenthesis(text: str, start: int, scope: _Scope, element: ET.Element) -> int:
    depth = 0
    index = start
    while index < len(text):
        if text.startswith("$(", index):
            depth += 1
            index += 2
            continue
        if text[index] == ")":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    raise _error(scope, element, f"unterminated substitution in '{text}'")


def _split_words(text: str) -> list[str]:
    """Split a substitution body on whitespace, keeping nested ``$(...)`` and quoted words whole."""
    words: list[str] = []
    current: list[str] = []
    in_word = False  # distinguishes an empty quoted word ('') from no word
    quote = None
    depth = 0
    index = 0
    while index < len(text):
        char = text[index]
        if quote:
            if char == quote:
                quote = None
            else:
                current.append(char)
        elif text.startswith("$(", index):
            depth += 1
            current.append("$(")
            in_word = True
            index += 2
            continue
        elif char == ")" and depth:
            depth -= 1
            current.append(char)
        elif char in "'\"" and not depth:
            quote = char
            in_word = True
        elif char.isspace() and not depth:
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        else:
            current.append(char)
            in_word = True
        index += 1
    if in_word:
        words.append("".join(current))
    return words


def _evaluate(body: str, scope: _Scope, element: ET.Element) -> str:
    words = [_substitute(word, scope, element) for word in _split_words(body)]
    if not words:
        raise _error(scope, element, "empty substitution $()")
    kind, args = words[0], words[1:]

    def expect(counts: Iterable[int], usage: str) -> None:
        if len(args) not in counts:
            raise _error(scope, element, f"bad substitution $({body}); usage: $({usage})")

    if kind in ("arg", "var"):
        expect([1], f"{kind} NAME")
        if args[0] not in scope.configurations:
            raise _error(scope, element, f"unknown launch argument '{args[0]}' in $({body})")
        return scope.configurations[args[0]]
    if kind == "env":
        expect([1, 2], "env NAME [DEFAULT]")
        value = os.environ.get(args[0], args[1] if len(args) == 2 else None)
        if value is None:
            raise _error(
                scope, element, f"environment variable '{args[0]}' is not set and $({body}) has no default"
            )
        return value
    if kind == "find-pkg-share":
        expect([1], "find-pkg-share PACKAGE")
        try:
            return str(find_package_share(args[0]))
        except LaunchError as error:
            raise _error(scope, element, str(error)) from None
    if kind == "dirname":
        expect([0], "dirname")
        return str(scope.file.parent)
    raise _error(scope, element, f"unknown substitution $({body})")


def find_package_share(package: str) -> Path:
    """Share directory of ``package``; ``ros_vla`` also resolves in a source checkout."""
    try:
        if package == PACKAGE:
            return package_share()
        return Path(get_package_share_directory(package))
    # PackageNotFoundError is a KeyError; an unset AMENT_PREFIX_PATH (or no ros_vla
    # share directory) is an OSError.
    except (KeyError, OSError) as error:
        raise LaunchError(f"cannot find the share directory of package '{package}': {error}") from None


# ------------------------------------------------------------------ command lines

#: Maps (package, executable) to the argv prefix that starts it.
Resolver = Callable[[str, str], list[str]]


def resolve_executable(package: str, executable: str) -> list[str]:
    """Default :data:`Resolver`: how ``ros2 run PACKAGE EXECUTABLE`` would start a program.

    ``ros_vla`` nodes are the package's console_scripts entry points; they are run with
    the launcher's own interpreter (rather than a wrapper script found on PATH) so that
    children always import the same ros_vla and dependencies as the launcher. Other
    packages' executables live in ``<prefix>/lib/<package>/`` per the ament index.
    """
    if package == PACKAGE:
        return _ros_vla_entry_point(executable)
    try:
        prefix = Path(get_package_prefix(package))
    except (KeyError, OSError) as error:
        raise LaunchError(f"cannot run executable '{executable}': unknown package '{package}' ({error})") from None
    program = prefix / "lib" / package / executable
    if not (program.is_file() and os.access(program, os.X_OK)):
        raise LaunchError(f"package '{package}' has no executable '{executable}' (looked for {program})")
    return [str(program)]


def _ros_vla_entry_point(executable: str) -> list[str]:
    for entry_point in importlib.metadata.entry_points(group="console_scripts"):
        if entry_point.name == executable and _belongs_to_ros_vla(entry_point):
            code = (
                f"import sys; import {entry_point.module} as entry; sys.argv[0] = {executable!r}; "
                f"sys.exit(entry.{entry_point.attr}())"
            )
            return [sys.executable, "-c", code]
    raise LaunchError(
        f"package '{PACKAGE}' has no executable '{executable}' (no such console_scripts entry point; "
        "is the package installed, e.g. with pip install -e .?)"
    )


def _belongs_to_ros_vla(entry_point: importlib.metadata.EntryPoint) -> bool:
    if entry_point.dist is None:  # metadata without distribution info: cannot tell, accept
        return True
    return re.sub(r"[-_.]+", "_", entry_point.dist.name).lower() == PACKAGE


def build_command(node: NodeSpec, resolver: Resolver = resolve_executable) -> list[str]:
    """The argv ``ros2 launch`` would use for ``node``."""
    command = [*resolver(node.pkg, node.executable), *node.args]
    ros_args = []
    if node.name:
        ros_args += ["-r", f"__node:={node.name}"]
    if node.namespace:
        ros_args += ["-r", f"__ns:={node.namespace}"]
    for parameter_file in node.parameter_files:
        ros_args += ["--params-file", str(parameter_file)]
    for name, value in node.parameters.items():
        ros_args += ["-p", f"{name}:={value}"]
    for source, target in node.remaps:
        ros_args += ["-r", f"{source}:={target}"]
    if ros_args:
        command += ["--ros-args", *ros_args]
    return command


# ------------------------------------------------------------------------ running

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent_hook() -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child get SIGKILL when its parent dies.

    The launcher's children run in their own session (so a terminal's Ctrl-C reaches only
    the launcher, which then shuts them down in order), hence nothing else would take
    them down if the launcher itself were SIGKILLed; the tests start nodes with it for
    the same reason. Note that the death signal fires when the *thread* that forked the
    child ends; the launcher forks each child from its supervisor thread, which lives
    until that child has exited.
    """
    parent_pid = os.getpid()

    def hook() -> None:
        if _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL)) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def _print_line(line: str) -> None:
    print(line, flush=True)


@dataclass
class _Child:
    """A launched node: its command and the process currently running it."""

    label: str
    node: NodeSpec
    command: list[str]
    process: subprocess.Popen | None = None
    finished: bool = False  # its supervisor has stopped (no more respawns)


class LaunchRunner:
    """Runs nodes as child processes, the way ``ros2 launch`` does.

    Each child's output is relayed line by line as ``[label] line`` where the label
    is the node name (or executable). ``shutdown()`` sends SIGINT to every child's
    process group, then SIGTERM after ``grace_period`` seconds, then SIGKILL after
    another ``kill_timeout`` seconds.
    """

    def __init__(
        self,
        nodes: Iterable[NodeSpec],
        resolver: Resolver = resolve_executable,
        grace_period: float = 5.0,
        kill_timeout: float = 2.0,
        emit: Callable[[str], None] = _print_line,
    ):
        self._grace_period = grace_period
        self._kill_timeout = kill_timeout
        self._emit_unlocked = emit
        self._emit_lock = threading.Lock()
        # Resolve every command up front so a bad node fails before anything starts.
        self._children: list[_Child] = []
        labels: set[str] = set()
        for node in nodes:
            label = node.name or node.executable
            suffix = 2
            while label in labels:
                label = f"{node.name or node.executable}-{suffix}"
                suffix += 1
            labels.add(label)
            self._children.append(_Child(label, node, build_command(node, resolver)))
        self._lock = threading.Lock()  # guards spawning against shutdown
        self._stopping = threading.Event()
        self._state_changed = threading.Event()  # a supervisor finished or shutdown was asked for
        self._supervisors: list[threading.Thread] = []
        self._shutdown_lock = threading.Lock()
        self._shut_down = False

    @property
    def processes(self) -> dict[str, subprocess.Popen]:
        """The process currently running each node, by label (exited ones included)."""
        with self._lock:
            return {child.label: child.process for child in self._children if child.process is not None}

    @property
    def commands(self) -> dict[str, list[str]]:
        return {child.label: child.command for child in self._children}

    def start(self) -> None:
        """Start every node and return at once."""
        if self._supervisors:
            raise RuntimeError("LaunchRunner.start() was already called")
        # Children inherit it: camera images need the larger shared-memory segments.
        use_project_dds_profile()
        for child in self._children:
            supervisor = threading.Thread(
                target=self._supervise, args=(child,), name=f"launch-{child.label}", daemon=True
            )
            self._supervisors.append(supervisor)
            supervisor.start()

    def run(self) -> int:
        """Start every node and block until SIGINT/SIGTERM, ``shutdown()`` or all nodes exit.

        Returns 0 if shut down on request or if every node finished cleanly, 1 otherwise.
        """
        shutdown_requested = threading.Event()

        def request_shutdown(signum: int, frame: object) -> None:
            shutdown_requested.set()
            self._state_changed.set()

        previous_handlers = {}
        if threading.current_thread() is threading.main_thread():  # signal handlers need the main thread
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous_handlers[signum] = signal.signal(signum, request_shutdown)
        try:
            self.start()
            while not (
                shutdown_requested.is_set()
                or self._stopping.is_set()
                or all(child.finished for child in self._children)
            ):
                self._state_changed.wait()
                self._state_changed.clear()
            requested = shutdown_requested.is_set() or self._stopping.is_set()
            self.shutdown()
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
        if requested:
            return 0
        return 0 if all(child.process and child.process.returncode == 0 for child in self._children) else 1

    def shutdown(self) -> None:
        """Stop every node (SIGINT, then SIGTERM, then SIGKILL) and wait until all have exited.

        Safe to call more than once and from several threads: later calls wait for the
        first to finish instead of signalling again (a second SIGINT would cut short a
        node's own clean-up).
        """
        with self._shutdown_lock:
            if self._shut_down:
                return
            with self._lock:
                self._stopping.set()
                processes = [
                    child.process
                    for child in self._children
                    if child.process is not None and child.process.returncode is None
                ]
            self._state_changed.set()
            for signum, timeout in (
                (signal.SIGINT, self._grace_period),
                (signal.SIGTERM, self._kill_timeout),
                (signal.SIGKILL, None),
            ):
                running = [process for process in processes if process.returncode is None]
                if not running:
                    break
                for process in running:
                    _signal_group(process, signum)
                _wait_all(running, timeout)
            for process in processes:
                # Whatever the node left behind in its process group (e.g. its own children).
                # Only groups of processes reaped just now: an older group id may be reused.
                _signal_group(process, signal.SIGKILL)
            for supervisor in self._supervisors:
                supervisor.join(timeout=2.0)
            self._shut_down = True

    def __enter__(self) -> LaunchRunner:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def _emit(self, line: str) -> None:
        with self._emit_lock:
            self._emit_unlocked(line)

    def _supervise(self, child: _Child) -> None:
        """Run ``child``, respawning it if asked to, until it is done or we are stopping."""
        try:
            while True:
                with self._lock:
                    if self._stopping.is_set():
                        return
                    process = self._spawn(child)
                if process is None:
                    return
                relay = threading.Thread(
                    target=self._relay_output, args=(child.label, process.stdout), daemon=True
                )
                relay.start()
                returncode = process.wait()
                # Let the relay print the last lines before the exit message; it may
                # outlive the process if a grandchild still holds the pipe open.
                relay.join(timeout=1.0)
                self._report_exit(child, process, returncode)
                if not child.node.respawn or self._stopping.wait(child.node.respawn_delay):
                    return
        finally:
            child.finished = True
            self._state_changed.set()

    def _spawn(self, child: _Child) -> subprocess.Popen | None:
        environment = {**os.environ, **child.node.env, "PYTHONUNBUFFERED": "1"}
        try:
            process = subprocess.Popen(
                child.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                bufsize=1,
                env=environment,
                start_new_session=True,
                preexec_fn=die_with_parent_hook(),
            )
        except (OSError, subprocess.SubprocessError) as error:
            self._emit(f"[ERROR] [{child.label}]: failed to start {shlex.join(child.command)}: {error}")
            return None
        child.process = process
        self._emit(f"[INFO] [{child.label}]: process started with pid [{process.pid}]")
        return process

    def _relay_output(self, label: str, stream) -> None:
        with stream:
            for line in stream:
                text = line.rstrip("\r\n")
                self._emit(f"[{label}] {text}")

    def _report_exit(self, child: _Child, process: subprocess.Popen, returncode: int) -> None:
        if returncode == 0 or self._stopping.is_set():
            self._emit(f"[INFO] [{child.label}]: process has finished [pid {process.pid}, exit code {returncode}]")
        else:
            # A failing node does not bring the others down, as in ros2 launch.
            self._emit(
                f"[ERROR] [{child.label}]: process has died [pid {process.pid}, exit code {returncode}, "
                f"cmd '{shlex.join(child.command)}']"
            )
        if child.node.respawn and not self._stopping.is_set():
            self._emit(f"[INFO] [{child.label}]: respawning in {child.node.respawn_delay:g} s")


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    # Each child leads its own process group (start_new_session), so this reaches
    # whatever it started too.
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def _wait_all(processes: list[subprocess.Popen], timeout: float | None) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass


# --------------------------------------------------------------------------- CLI


def launch_main(argv: list[str]) -> int:
    """``ros-vla launch FILE [name:=value ...] [--print]``."""
    parser = argparse.ArgumentParser(
        prog="ros-vla launch", description="Run a ROS 2 launch XML file (a subset of ros2 launch)."
    )
    parser.add_argument("file", help=f"launch file: a path, or a file name in {PACKAGE}'s share/launch directory")
    parser.add_argument("arguments", nargs="*", metavar="name:=value", help="launch argument overrides")
    parser.add_argument(
        "--print", action="store_true", dest="print_only", help="print the resolved command lines and exit"
    )
    options = parser.parse_args(argv)
    try:
        overrides = _parse_overrides(options.arguments)
        nodes = parse_launch_file(_find_launch_file(options.file), overrides)
        runner = LaunchRunner(nodes)
    except LaunchError as error:
        print(f"ros-vla launch: error: {error}", file=sys.stderr)
        return 1
    if options.print_only:
        for (label, command), node in zip(runner.commands.items(), nodes):
            environment = " ".join(f"{key}={shlex.quote(value)}" for key, value in node.env.items())
            print(f"[{label}] {environment + ' ' if environment else ''}{shlex.join(command)}")
        return 0
    return runner.run()


def _parse_overrides(arguments: list[str]) -> dict[str, str]:
    overrides = {}
    for argument in arguments:
        name, separator, value = argument.partition(":=")
        if not separator or not name:
            raise LaunchError(f"launch arguments must look like name:=value, got '{argument}'")
        overrides[name] = value
    return overrides


def _find_launch_file(name: str) -> Path:
    path = Path(name)
    if path.is_file():
        return path
    if path.name == name:  # a bare file name: look in the package's launch directory
        try:
            candidate = package_share() / "launch" / name
        except FileNotFoundError as error:
            raise LaunchError(str(error)) from None
        if candidate.is_file():
            return candidate
        raise LaunchError(f"no launch file '{name}' (not a file here, nor in {candidate.parent})")
    raise LaunchError(f"no launch file '{name}'")
