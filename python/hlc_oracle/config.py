"""The oracle's configuration: one typed object with documented defaults.

:class:`OracleConfig` holds one dataclass per section. Four sources fill it, each overriding the
one before: the defaults written here, a TOML file (``[section] field = value``), environment
variables (``HLC_ORACLE_<SECTION>_<FIELD>``, e.g. ``HLC_ORACLE_SERVER_LISTEN``), and command-line
flags (``--listen``; every field also has ``--<section>.<field>``-style spelling through
``--set section.field=value``).

Errors (:class:`ConfigError`) have one shape wherever the value came from:
``<source>: <section>.<field> must be <what is allowed>, got <value>``, where the source is the
file's path, ``environment variable HLC_ORACLE_...`` or ``command line``. An unknown section,
setting or ``HLC_ORACLE_*`` variable is an error listing the known ones.

To add settings, add a field (with a default and a ``doc``) to a section, or a new section
dataclass and a field of that type to :class:`OracleConfig`; the loader, the environment names,
the ``--set`` flag and ``hlc-oracle serve --help`` pick it up. A field's ``flag`` metadata gives it
a dedicated command-line flag.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hlc_oracle._core import MAX_NODE, MAX_RESERVE
from hlc_oracle.addresses import AddressError, parse_host_port, split_scheme
from hlc_oracle.proto import DEFAULT_MAX_MESSAGE_BYTES
from hlc_oracle.scheduler import CommitOptions
from hlc_oracle.setting import setting
from hlc_oracle.skew import GuardPolicy, SkewConfig
from hlc_oracle.skew.peers import PeersConfig

ENV_PREFIX = "HLC_ORACLE_"
#: The one ``HLC_ORACLE_*`` variable that is not a setting: the config file's path.
CONFIG_VARIABLE = f"{ENV_PREFIX}CONFIG"


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or out of range."""


@dataclass
class ServerSection:
    listen: str = setting(
        "127.0.0.1:50051",
        "gRPC address to listen on, host:port (port 0 picks a free one)",
        "--listen",
    )
    data_dir: Path = setting(
        Path("hlc-oracle-data"),
        "the node's state: the persisted timestamp window and the commit log (commit-log/, up "
        "to commit.retain_segments x commit.segment_size)",
        "--data-dir",
    )
    role: str = setting("standalone", "role reported by GetStatus")
    shutdown_grace_s: float = setting(
        5.0, "on SIGTERM/SIGINT, seconds in-flight requests get to finish", "--shutdown-grace"
    )
    port_file: Path | None = setting(
        None,
        "write the bound port to this file once serving (for scripts and tests)",
        "--port-file",
    )


@dataclass
class ClockSection:
    node_id: int = setting(0, "node id stamped on every timestamp, 0..65535", "--node-id")
    max_offset_us: int = setting(
        500_000,
        "largest lead (microseconds) of an observed remote timestamp over the local physical clock",
        "--max-offset-us",
    )


@dataclass
class WindowSection:
    size_ms: int = setting(
        200,
        "how far ahead of the clock the persisted timestamp limit is saved (milliseconds); at "
        "most clock.max_offset_us/2 lets a node restarted after a crash, or a new leader, serve "
        "at once; a larger window makes it wait until the saved limit is that close (HLC bound)",
    )
    check_interval_ms: int = setting(
        50, "how often the window renewer checks the clock against the limit (milliseconds)"
    )


@dataclass
class LimitsSection:
    max_count: int = setting(
        1_000_000, "largest count of one GetTimestamps request (at most 4,194,304)", "--max-count"
    )
    max_message_bytes: int = setting(
        DEFAULT_MAX_MESSAGE_BYTES,
        "largest gRPC message accepted or sent (bytes); the default admits the largest "
        "transaction the default commit limits allow",
        "--max-message-bytes",
    )
    max_concurrent_streams: int | None = setting(
        None,
        "largest number of concurrent streams (calls) per connection; unset: no limit. A client "
        "that opens more at once on a new connection sees some calls refused before it learns it",
    )
    max_concurrent_rpcs: int | None = setting(
        None,
        "largest number of RPCs in progress on the server; further ones get RESOURCE_EXHAUSTED",
    )


@dataclass
class TlsSection:
    cert_file: Path | None = setting(
        None,
        "PEM server certificate (chain); TLS is on when this and key_file are set",
        "--tls-cert",
    )
    key_file: Path | None = setting(None, "PEM private key of the server certificate", "--tls-key")
    client_ca_file: Path | None = setting(
        None,
        "PEM CA bundle: when set, clients must present a certificate it signed (mutual TLS)",
        "--tls-client-ca",
    )


@dataclass
class MetricsSection:
    port: int | None = setting(
        None, "Prometheus /metrics port (off when unset; 0 picks a free one)", "--metrics-port"
    )
    host: str = setting("127.0.0.1", "address the metrics endpoint listens on", "--metrics-host")


@dataclass
class LogSection:
    level: str = setting("info", "debug, info, warning or error", "--log-level")
    format: str = setting("json", "json (one object per line) or text", "--log-format")


@dataclass
class ClusterSection:
    etcd_endpoints: tuple[str, ...] = setting(
        (),
        "etcd client endpoints, host:port, http://host:port or https://host:port, one scheme "
        "for all (comma-separated on the command line and in the environment); empty: "
        "standalone, one node with its local window file and commit log",
        "--etcd-endpoints",
    )
    etcd_ca: Path | None = setting(
        None,
        "PEM CA bundle that signed etcd's server certificates: connect to etcd with TLS "
        "(https:// endpoints do too, trusting the system's CAs without it)",
        "--etcd-ca",
    )
    etcd_cert: Path | None = setting(
        None,
        "PEM client certificate for etcd's --client-cert-auth (TLS); with etcd's auth on and "
        "no etcd_user, etcd takes the user from its CN",
        "--etcd-cert",
    )
    etcd_key: Path | None = setting(None, "PEM private key of etcd_cert", "--etcd-key")
    etcd_user: str | None = setting(
        None,
        "etcd user (etcd's auth), with etcd_password_file; unset: the user is etcd_cert's CN, "
        "or etcd's auth is off",
        "--etcd-user",
    )
    etcd_password_file: Path | None = setting(
        None,
        "file holding etcd_user's password (its first line); there is no password setting, so "
        "none shows on a command line",
        "--etcd-password-file",
    )
    name: str = setting(
        "hlc-oracle",
        "the cluster's name: its keys live under /hlc-oracle/<name>/ in etcd (no '/')",
        "--cluster-name",
    )
    lease_ttl_s: int = setting(
        3,
        "seconds of the leader's etcd lease (at least 1): a leader whose host died or is cut off "
        "is replaced after about this long (a killed process at once, see depose_dead_leader), "
        "and a live one that cannot reach etcd stops serving before it runs out",
    )
    advertise: str | None = setting(
        None,
        "host:port that followers send clients to when this node leads; unset: server.listen",
        "--advertise",
    )
    depose_dead_leader: bool = setting(
        True,
        "followers delete the leader key at once when the leader's advertised address refuses "
        "connections (its process is gone) instead of waiting out its lease; needs an advertised "
        "address that reaches the node itself, not a proxy or load balancer that may refuse",
    )
    decision_retention_s: float = setting(
        600.0,
        "seconds the leader keeps group-commit decisions in etcd (status and idempotent "
        "resubmission across a failover work this long); at least 60, and longer than clients "
        "keep retrying a commit",
    )
    etcd_quota_bytes: int = setting(
        0,
        "etcd's --quota-backend-bytes, for the leader's capacity guard (it shortens decision "
        "retention before etcd's database fills); 0: read it from the members' /metrics "
        "(plaintext links), else assume etcd's default 2 GiB",
    )

    @property
    def clustered(self) -> bool:
        return bool(self.etcd_endpoints)

    @property
    def etcd_tls(self) -> bool:
        """Whether the link to etcd uses TLS: https:// endpoints, or a CA or client certificate
        given (as etcdctl does with --cacert or --cert)."""
        schemes = {split_scheme(endpoint)[0] for endpoint in self.etcd_endpoints}
        return "https" in schemes or self.etcd_ca is not None or self.etcd_cert is not None

    def validate(self) -> None:
        seen: set[str] = set()
        schemes: set[str | None] = set()
        for endpoint in self.etcd_endpoints:
            if not isinstance(endpoint, str):
                check_host_port(endpoint, "cluster.etcd_endpoints", allow_port_zero=False)
            scheme, address = split_scheme(endpoint)
            try:
                check_host_port(address, "cluster.etcd_endpoints", allow_port_zero=False)
            except ConfigError:
                raise ConfigError(
                    "cluster.etcd_endpoints must be host:port, http://host:port or "
                    f"https://host:port with a port in 1..65535, got {endpoint!r}"
                ) from None
            if address in seen:
                raise ConfigError(
                    f"cluster.etcd_endpoints must list each endpoint once, got {endpoint!r} twice"
                )
            seen.add(address)
            schemes.add(scheme)
        if {"http", "https"} <= schemes:
            raise ConfigError(
                "cluster.etcd_endpoints must use one scheme (one channel to every member), got "
                f"http:// and https:// in {','.join(self.etcd_endpoints)!r}"
            )
        self._validate_etcd_security("http" in schemes)
        if not self.name or "/" in self.name or self.name != self.name.strip():
            raise ConfigError(
                "cluster.name must be non-empty, without '/' or surrounding spaces (it is one "
                f"level of the etcd key prefix), got {self.name!r}"
            )
        if not 1 <= self.lease_ttl_s <= MAX_LEASE_TTL_S:
            raise ConfigError(
                f"cluster.lease_ttl_s must be in 1..{MAX_LEASE_TTL_S}, got {self.lease_ttl_s}"
            )
        if self.advertise is not None:
            check_host_port(self.advertise, "cluster.advertise", allow_port_zero=False)
        if not isinstance(self.etcd_quota_bytes, int) or self.etcd_quota_bytes < 0:
            raise ConfigError(
                f"cluster.etcd_quota_bytes must be an int >= 0, got {self.etcd_quota_bytes!r}"
            )
        if not MIN_DECISION_RETENTION_S <= self.decision_retention_s <= MAX_DECISION_RETENTION_S:
            raise ConfigError(
                f"cluster.decision_retention_s must be in {MIN_DECISION_RETENTION_S:g}.."
                f"{MAX_DECISION_RETENTION_S:g}, got {self.decision_retention_s:g}"
            )

    def _validate_etcd_security(self, plaintext_scheme: bool) -> None:
        if (self.etcd_cert is None) != (self.etcd_key is None):
            given, missing = (
                ("cluster.etcd_cert", "cluster.etcd_key")
                if self.etcd_key is None
                else ("cluster.etcd_key", "cluster.etcd_cert")
            )
            path = self.etcd_cert or self.etcd_key
            raise ConfigError(
                f"{given} must be set together with {missing}, got {str(path)!r} without it"
            )
        if plaintext_scheme and (self.etcd_ca is not None or self.etcd_cert is not None):
            setting_name = "cluster.etcd_ca" if self.etcd_ca is not None else "cluster.etcd_cert"
            raise ConfigError(
                f"{setting_name} (TLS) cannot go with http:// endpoints (plaintext): write "
                f"https:// or host:port, got {','.join(self.etcd_endpoints)!r}"
            )
        if (self.etcd_user is None) != (self.etcd_password_file is None):
            if self.etcd_user is None:
                raise ConfigError(
                    "cluster.etcd_password_file needs cluster.etcd_user, got "
                    f"{str(self.etcd_password_file)!r} without it"
                )
            raise ConfigError(
                "cluster.etcd_user needs cluster.etcd_password_file (the password is read from "
                f"a file, never given as a setting), got user {self.etcd_user!r} without it"
            )
        if self.etcd_user is not None and (
            not self.etcd_user or self.etcd_user != self.etcd_user.strip()
        ):
            raise ConfigError(
                "cluster.etcd_user must be non-empty, without surrounding spaces, got "
                f"{self.etcd_user!r}"
            )


# An hour: a longer lease only delays the replacement of a dead leader.
MAX_LEASE_TTL_S = 3600
# Decisions are kept at least a minute (clients retry a commit for seconds) and at most a week
# (etcd holds them all, within its quota).
MIN_DECISION_RETENTION_S = 60.0
MAX_DECISION_RETENTION_S = 7 * 86_400.0
# Listen addresses that mean "every interface": no client can be sent there.
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def check_host_port(value: object, name: str, *, allow_port_zero: bool) -> None:
    """Raises :class:`ConfigError` unless ``value`` is ``host:port`` (``[v6]:port`` too), with a
    port in 0..65535 (1..65535 unless ``allow_port_zero``) and no URL scheme."""
    low = 0 if allow_port_zero else 1
    message = f"{name} must be host:port with a port in {low}..65535, got {value!r}"
    if not isinstance(value, str):
        raise ConfigError(message)
    try:
        parse_host_port(value, allow_port_zero=allow_port_zero)
    except AddressError:
        raise ConfigError(message) from None


@dataclass
class OracleConfig:
    """Everything ``hlc-oracle serve`` needs; the defaults are the embedded single node."""

    server: ServerSection = field(default_factory=ServerSection)
    clock: ClockSection = field(default_factory=ClockSection)
    window: WindowSection = field(default_factory=WindowSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    tls: TlsSection = field(default_factory=TlsSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    log: LogSection = field(default_factory=LogSection)
    # NTP polling and the max-offset guard (hlc_oracle.skew): servers, thresholds, policies.
    ntp: SkewConfig = field(default_factory=SkewConfig)
    # Clustered: each node measures its clock against its peers (hlc_oracle.skew.peers).
    peers: PeersConfig = field(default_factory=PeersConfig)
    # Group commit (hlc_oracle.scheduler): durability, batching, limits, the commit log.
    commit: CommitOptions = field(default_factory=CommitOptions)
    # Clustered mode (etcd): empty endpoints keep the standalone node.
    cluster: ClusterSection = field(default_factory=ClusterSection)

    @property
    def advertise_address(self) -> str:
        """The address followers redirect clients to: ``cluster.advertise``, else
        ``server.listen`` (whose port 0 the server replaces with the port it bound)."""
        return self.cluster.advertise or self.server.listen

    def validate(self) -> None:
        """Raises :class:`ConfigError` naming the first field out of range.

        Each message starts with the ``section.field`` it is about, so that :func:`load` can put
        the setting's source in front of it.
        """
        check_host_port(self.server.listen, "server.listen", allow_port_zero=True)
        checks: list[tuple[str, int | float | None, int | float, int | float]] = [
            ("clock.node_id", self.clock.node_id, 0, MAX_NODE),
            ("clock.max_offset_us", self.clock.max_offset_us, 0, 2**52),
            ("window.size_ms", self.window.size_ms, 10, 86_400_000),
            ("window.check_interval_ms", self.window.check_interval_ms, 1, 60_000),
            ("limits.max_count", self.limits.max_count, 1, MAX_RESERVE),
            ("limits.max_message_bytes", self.limits.max_message_bytes, 64, 2**31 - 1),
            ("limits.max_concurrent_streams", self.limits.max_concurrent_streams, 1, 2**31 - 1),
            ("limits.max_concurrent_rpcs", self.limits.max_concurrent_rpcs, 1, 2**31 - 1),
            ("metrics.port", self.metrics.port, 0, 65535),
            ("server.shutdown_grace_s", self.server.shutdown_grace_s, 0, 3600),
        ]
        for name, value, low, high in checks:
            if value is not None and not low <= value <= high:
                raise ConfigError(f"{name} must be in {low}..{high}, got {value}")
        if self.window.check_interval_ms * 2 > self.window.size_ms:
            raise ConfigError(
                "window.check_interval_ms must be at most half of window.size_ms "
                f"({self.window.size_ms}), got {self.window.check_interval_ms}"
            )
        if (self.tls.cert_file is None) != (self.tls.key_file is None):
            given, missing = (
                ("tls.cert_file", "tls.key_file")
                if self.tls.key_file is None
                else ("tls.key_file", "tls.cert_file")
            )
            path = self.tls.cert_file or self.tls.key_file
            raise ConfigError(
                f"{given} must be set together with {missing}, got {str(path)!r} without it"
            )
        if self.tls.client_ca_file is not None and self.tls.cert_file is None:
            raise ConfigError(
                "tls.client_ca_file (mutual TLS) needs tls.cert_file and tls.key_file, got "
                f"{str(self.tls.client_ca_file)!r} without them"
            )
        if self.log.level not in ("debug", "info", "warning", "error"):
            raise ConfigError(
                f"log.level must be debug, info, warning or error, got {self.log.level!r}"
            )
        if self.log.format not in ("json", "text"):
            raise ConfigError(f"log.format must be json or text, got {self.log.format!r}")
        try:
            self.ntp.validate()
        except (TypeError, ValueError) as err:
            raise ConfigError(f"ntp.{err}") from err
        try:
            self.peers.validate()
        except (TypeError, ValueError) as err:
            raise ConfigError(f"peers.{err}") from err
        try:
            self.commit.validate()
        except (TypeError, ValueError) as err:
            raise ConfigError(f"commit.{err}") from err
        shared = commit_log_in_data_dir(self)
        if shared is not None:
            raise ConfigError(shared)
        self.cluster.validate()
        if self.cluster.clustered and self.cluster.advertise is None:
            listen_host, _ = parse_host_port(self.server.listen, allow_port_zero=True)
            if listen_host in WILDCARD_HOSTS:
                raise ConfigError(
                    "cluster.advertise must be set (host:port) when the node is clustered and "
                    "server.listen is a wildcard address (followers send clients to the "
                    f"advertised address), got none with server.listen {self.server.listen!r}"
                )
        if not self.ntp.servers and self.ntp.unknown_policy is GuardPolicy.REFUSE:
            raise ConfigError(
                "ntp.unknown_policy must be warn while ntp.servers is empty (refuse needs "
                "ntp.servers: without them the offset is never known and the node would never "
                "serve), got refuse"
            )


def commit_log_in_data_dir(config: OracleConfig) -> str | None:
    """Why ``commit.log_dir`` cannot be ``server.data_dir`` itself, when it is (the commit log
    locks its directory's ``LOCK``, the file the data dir's lock takes); ``None`` otherwise."""
    log_dir, data_dir = config.commit.log_dir, config.server.data_dir
    if not config.commit.enabled or log_dir is None:
        return None
    try:
        same = log_dir.resolve() == data_dir.resolve()
    except OSError:
        return None
    if not same:
        return None
    return (
        f"commit.log_dir {log_dir} is the data dir itself: give the commit log a directory of "
        f"its own (the default is {data_dir / 'commit-log'})"
    )


def as_typed(value: Any) -> str:
    """``value`` as a user would type it in a flag, the environment or ``--set``: ``unset``,
    ``true``, a plain path, a comma-separated list (``none`` when empty), an enum's value."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return as_typed(value.value)
    if isinstance(value, tuple | list):
        return ",".join(as_typed(item) for item in value) or "none"
    return str(value)


def sections(config: OracleConfig) -> list[tuple[str, Any]]:
    """``(name, section object)`` for each section of ``config``."""
    return [(f.name, getattr(config, f.name)) for f in dataclasses.fields(config)]


def fields_of(section: Any) -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(section))


def field_type(section: Any, name: str) -> Any:
    return typing.get_type_hints(type(section))[name]


def convert(value: Any, annotation: Any, name: str) -> Any:
    """``value`` (from TOML, or a string from the environment or a flag) as ``annotation``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("", "none")):
            return None
        return convert(value, options[0], name)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        try:
            return annotation(value)
        except ValueError:
            choices = ", ".join(str(member.value) for member in annotation)
            raise ConfigError(f"{name} must be one of {choices}, got {value!r}") from None
    if typing.get_origin(annotation) is tuple:
        # A TOML array, or one comma-separated string from the environment or a flag; the
        # section's own validate() parses the items.
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list | tuple):
            return tuple(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""), 0)
            except ValueError:
                pass
    elif annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif annotation is Path and isinstance(value, str | Path):
        return Path(value)
    kind = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(f"{name} must be {kind}, got {value!r}")


def apply(
    config: OracleConfig,
    values: Mapping[str, Mapping[str, Any]],
    source: str | Callable[[str], str],
    sources: dict[str, str] | None = None,
) -> None:
    """Sets ``values[section][field]`` on ``config``; unknown names are errors naming ``source``.

    ``source`` is where the values came from, or a function of ``"section.field"`` saying it.
    ``sources`` (``"section.field"`` -> where its value came from) is updated for every setting.
    """
    known = dict(sections(config))
    for section_name, entries in values.items():
        if section_name not in known:
            where = source(section_name) if callable(source) else source
            raise ConfigError(
                f"{where}: unknown section [{section_name}]; known: {', '.join(known)}"
            )
        if not isinstance(entries, Mapping):
            where = source(section_name) if callable(source) else source
            raise ConfigError(f"{where}: [{section_name}] must be a table, got {entries!r}")
        section = known[section_name]
        names = {f.name for f in fields_of(section)}
        for key, value in entries.items():
            qualified = f"{section_name}.{key}"
            origin = source(qualified) if callable(source) else source
            if key not in names:
                raise ConfigError(
                    f"{origin}: unknown setting {qualified}; "
                    f"known in [{section_name}]: {', '.join(sorted(names))}"
                )
            converted = convert(value, field_type(section, key), f"{origin}: {qualified}")
            setattr(section, key, converted)
            if sources is not None:
                sources[qualified] = origin


def from_toml(path: Path) -> dict[str, dict[str, Any]]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as err:
        raise ConfigError(f"config file {path}: cannot read it: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path}: not valid TOML: {err}") from err


def from_environment(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``HLC_ORACLE_<SECTION>_<FIELD>`` variables, matched against the known fields.

    Any other ``HLC_ORACLE_*`` variable but ``HLC_ORACLE_CONFIG`` is a :class:`ConfigError`, as
    an unknown key in the file is: a typo must not be silently ignored.
    """
    known: dict[str, tuple[str, str]] = {}
    for section_name, section in sections(OracleConfig()):
        for f in fields_of(section):
            known[environment_variable(section_name, f.name)] = (section_name, f.name)
    found: dict[str, dict[str, str]] = {}
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable == CONFIG_VARIABLE:
            continue
        if variable not in known:
            raise ConfigError(unknown_variable_message(variable, known))
        section_name, field_name = known[variable]
        found.setdefault(section_name, {})[field_name] = environ[variable]
    return found


def unknown_variable_message(variable: str, known: Mapping[str, tuple[str, str]]) -> str:
    """Names the variables of the section ``variable`` seems to mean, or the sections."""
    section_prefixes = sorted({f"{ENV_PREFIX}{section.upper()}_" for section, _ in known.values()})
    prefix = next((p for p in section_prefixes if variable.startswith(p)), None)
    if prefix is None:
        listed = ", ".join([CONFIG_VARIABLE, *(f"{p}*" for p in section_prefixes)])
    else:
        listed = ", ".join(sorted(name for name in known if name.startswith(prefix)))
    return f"environment variable {variable}: unknown setting; known: {listed}"


def environment_variable(section_name: str, field_name: str) -> str:
    return f"{ENV_PREFIX}{section_name}_{field_name}".upper()


def environment_source(qualified: str) -> str:
    """The source of ``section.field`` when it came from the environment: its variable."""
    section_name, _, field_name = qualified.partition(".")
    return f"environment variable {environment_variable(section_name, field_name)}"


def attributed(err: ConfigError, sources: Mapping[str, str]) -> ConfigError:
    """``err`` from :meth:`OracleConfig.validate` with the source of the setting it names."""
    message = str(err)
    key = message.split(" ", 1)[0].rstrip(":,")
    source = sources.get(key)
    return ConfigError(f"{source}: {message}") if source else err


def load(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> OracleConfig:
    """Defaults < ``config_file`` (TOML) < ``environ`` < ``overrides`` (command-line flags).

    ``environ`` defaults to ``os.environ``; ``HLC_ORACLE_CONFIG`` names a config file when
    ``config_file`` is not given. The result is validated; an error names where the offending
    value came from.
    """
    environ = os.environ if environ is None else environ
    config = OracleConfig()
    sources: dict[str, str] = {}
    if config_file is None and environ.get(CONFIG_VARIABLE):
        config_file = Path(environ[CONFIG_VARIABLE])
    if config_file is not None:
        apply(config, from_toml(config_file), f"config file {config_file}", sources)
    apply(config, from_environment(environ), environment_source, sources)
    if overrides:
        apply(config, overrides, "command line", sources)
    try:
        config.validate()
    except ConfigError as err:
        raise attributed(err, sources) from None
    return config
