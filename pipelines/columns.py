"""Spans held column by column in the `otel_traces` layout, ready to be written as one Native block."""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from pipelines.native import NativeBlock, write_fixed, write_strings

STRING_MAP = "Map(String, String)"
_ColumnStarter = Callable[[str, str], bytearray]


@dataclass
class MapColumn:
    """Map(String, String) values: keys and values flattened, with cumulative end offsets."""

    keys: list[str] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    offsets: array[int] = field(default_factory=lambda: array("Q"))

    def close_row(self) -> None:
        """End the current row's map (its pairs were appended to keys/values)."""
        self.offsets.append(len(self.keys))

    def truncate(self, rows: int) -> None:
        """Keep the first `rows` maps."""
        end = self.offsets[rows - 1] if rows else 0
        del self.offsets[rows:]
        del self.keys[end:]
        del self.values[end:]

    def write(self, dest: bytearray) -> None:
        """Native Map: offsets, then the keys column, then the values column."""
        write_fixed(self.offsets, dest)
        write_strings(self.keys, dest)
        write_strings(self.values, dest)


@dataclass
class EventColumns:
    """The `Events` Nested columns; `offsets` ends each span's events."""

    offsets: array[int] = field(default_factory=lambda: array("Q"))
    timestamps: array[int] = field(default_factory=lambda: array("q"))
    names: list[str] = field(default_factory=list)
    attributes: MapColumn = field(default_factory=MapColumn)

    def truncate(self, rows: int) -> None:
        end = self.offsets[rows - 1] if rows else 0
        del self.offsets[rows:]
        del self.timestamps[end:]
        del self.names[end:]
        self.attributes.truncate(end)


@dataclass
class LinkColumns:
    """The `Links` Nested columns; `offsets` ends each span's links."""

    offsets: array[int] = field(default_factory=lambda: array("Q"))
    trace_ids: list[str] = field(default_factory=list)
    span_ids: list[str] = field(default_factory=list)
    trace_states: list[str] = field(default_factory=list)
    attributes: MapColumn = field(default_factory=MapColumn)

    def truncate(self, rows: int) -> None:
        end = self.offsets[rows - 1] if rows else 0
        del self.offsets[rows:]
        del self.trace_ids[end:]
        del self.span_ids[end:]
        del self.trace_states[end:]
        self.attributes.truncate(end)


@dataclass
class SpanColumns:
    """A batch of spans, one list or array per `otel_traces` column."""

    timestamps: array[int] = field(default_factory=lambda: array("q"))
    trace_ids: list[str] = field(default_factory=list)
    span_ids: list[str] = field(default_factory=list)
    parent_span_ids: list[str] = field(default_factory=list)
    trace_states: list[str] = field(default_factory=list)
    span_names: list[str] = field(default_factory=list)
    span_kinds: list[str] = field(default_factory=list)
    service_names: list[str] = field(default_factory=list)
    resource_attributes: MapColumn = field(default_factory=MapColumn)
    scope_names: list[str] = field(default_factory=list)
    scope_versions: list[str] = field(default_factory=list)
    span_attributes: MapColumn = field(default_factory=MapColumn)
    durations: array[int] = field(default_factory=lambda: array("Q"))
    status_codes: list[str] = field(default_factory=list)
    status_messages: list[str] = field(default_factory=list)
    events: EventColumns = field(default_factory=EventColumns)
    links: LinkColumns = field(default_factory=LinkColumns)

    def __len__(self) -> int:
        return len(self.timestamps)

    def truncate(self, rows: int) -> None:
        """Drop every span after the first `rows` (undo a partly decoded message)."""
        for column in (
            self.timestamps, self.trace_ids, self.span_ids, self.parent_span_ids, self.trace_states,
            self.span_names, self.span_kinds, self.service_names, self.scope_names, self.scope_versions,
            self.durations, self.status_codes, self.status_messages,
        ):
            del column[rows:]
        self.resource_attributes.truncate(rows)
        self.span_attributes.truncate(rows)
        self.events.truncate(rows)
        self.links.truncate(rows)

    def native(self) -> tuple[list[str], bytes]:
        """Column names and one Native block holding every span."""
        names: list[str] = []
        block = NativeBlock(len(INSERT_COLUMNS), len(self))

        def column(name: str, type_name: str) -> bytearray:
            names.append(name)
            return block.column(name, type_name)

        write_fixed(self.timestamps, column("Timestamp", "DateTime64(9)"))
        for name, values in (
            ("TraceId", self.trace_ids), ("SpanId", self.span_ids), ("ParentSpanId", self.parent_span_ids),
            ("TraceState", self.trace_states), ("SpanName", self.span_names), ("SpanKind", self.span_kinds),
            ("ServiceName", self.service_names),
        ):
            write_strings(values, column(name, "String"))
        self.resource_attributes.write(column("ResourceAttributes", STRING_MAP))
        write_strings(self.scope_names, column("ScopeName", "String"))
        write_strings(self.scope_versions, column("ScopeVersion", "String"))
        self.span_attributes.write(column("SpanAttributes", STRING_MAP))
        write_fixed(self.durations, column("Duration", "UInt64"))
        write_strings(self.status_codes, column("StatusCode", "String"))
        write_strings(self.status_messages, column("StatusMessage", "String"))
        self._write_events(column)
        self._write_links(column)
        return names, block.payload()

    def _write_events(self, column: _ColumnStarter) -> None:
        events = self.events
        dest = column("Events.Timestamp", "Array(DateTime64(9))")
        write_fixed(events.offsets, dest)
        write_fixed(events.timestamps, dest)
        dest = column("Events.Name", "Array(String)")
        write_fixed(events.offsets, dest)
        write_strings(events.names, dest)
        dest = column("Events.Attributes", f"Array({STRING_MAP})")
        write_fixed(events.offsets, dest)
        events.attributes.write(dest)

    def _write_links(self, column: _ColumnStarter) -> None:
        links = self.links
        for name, values in (
            ("Links.TraceId", links.trace_ids), ("Links.SpanId", links.span_ids),
            ("Links.TraceState", links.trace_states),
        ):
            dest = column(name, "Array(String)")
            write_fixed(links.offsets, dest)
            write_strings(values, dest)
        dest = column("Links.Attributes", f"Array({STRING_MAP})")
        write_fixed(links.offsets, dest)
        links.attributes.write(dest)


INSERT_COLUMNS = (
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind", "ServiceName",
    "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes", "Duration", "StatusCode",
    "StatusMessage", "Events.Timestamp", "Events.Name", "Events.Attributes", "Links.TraceId", "Links.SpanId",
    "Links.TraceState", "Links.Attributes",
)
