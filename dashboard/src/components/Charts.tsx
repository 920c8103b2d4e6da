import { useId, useMemo } from "react";

import { formatClock, formatCompact, formatInteger, formatMinutes, formatSeconds, formatUsd, formatUsdCompact } from "../format";
import { HISTORY_MINUTES, type HistoryState, type Sample } from "../state";
import { TimeChart, type ChartSeries } from "./TimeChart";

interface Props {
  history: Sample[];
  info: HistoryState;
  onMinutes: (minutes: number) => void;
}

type Column = Exclude<keyof Sample, "t">;

interface ChartSpec {
  id: string;
  title: string;
  series: { label: string; color: string; column: Column }[];
  format: (value: number) => string;
  axisFormat: (value: number) => string;
}

const CHARTS: readonly ChartSpec[] = [
  {
    id: "chart-active",
    title: "Active users",
    series: [{ label: "Active users", color: "#2563eb", column: "activeUsers" }],
    format: formatInteger,
    axisFormat: formatCompact,
  },
  {
    id: "chart-generations",
    title: "Generations (totals)",
    series: [
      { label: "Websites", color: "#7c3aed", column: "websitesGenerated" },
      { label: "Images", color: "#0d9488", column: "imagesGenerated" },
      { label: "Failed", color: "#dc2626", column: "failedGenerations" },
    ],
    format: formatInteger,
    axisFormat: formatCompact,
  },
  {
    id: "chart-revenue",
    title: "Revenue today",
    series: [{ label: "Revenue today", color: "#15803d", column: "revenueToday" }],
    format: formatUsd,
    axisFormat: formatUsdCompact,
  },
];

const shortName = (minutes: number): string => (minutes % 60 === 0 ? `${minutes / 60} h` : `${minutes} min`);

function describeSource(info: HistoryState, samples: Sample[]): string {
  switch (info.status) {
    case "loading":
      return "Loading the stored snapshots…";
    case "failed":
      return `Stored snapshots unavailable (${info.error ?? "unknown error"}): live updates only.`;
    case "loaded": {
      const first = samples[0];
      const since = first ? ` from ${formatClock(first.t)}` : "";
      const stored =
        info.points === 0
          ? "No stored snapshots yet"
          : `${formatInteger(info.points)} stored snapshots${since}` +
            (info.bucketMs > 0 ? ` (one per ${formatSeconds(info.bucketMs)})` : "");
      const partial = info.complete ? "" : "; the gateway is still reading the stored history";
      return `${stored}${partial}, then live updates. Hover a chart for values.`;
    }
  }
}

export function Charts({ history, info, onMinutes }: Props) {
  const pickerName = useId();
  const data = useMemo(() => {
    const times = history.map((s) => s.t / 1000);
    return CHARTS.map((spec) => ({
      spec,
      series: spec.series.map(
        ({ label, color, column }): ChartSeries => ({ label, color, values: history.map((s) => s[column]) }),
      ),
      times,
    }));
  }, [history]);

  return (
    <section
      className="card"
      aria-labelledby="trends-title"
      id="trends"
      data-history={info.status}
      data-first-sample={history[0]?.t ?? ""}
    >
      <div className="section-head">
        <div>
          <h2 id="trends-title">Last {formatMinutes(info.minutes)}</h2>
          <p className="muted small" data-testid="history-source" aria-live="polite">
            {describeSource(info, history)}
          </p>
        </div>
        <fieldset className="segmented">
          <legend className="visually-hidden">Time range of the charts</legend>
          {HISTORY_MINUTES.map((minutes) => (
            <label key={minutes}>
              <input
                type="radio"
                name={pickerName}
                value={minutes}
                checked={info.minutes === minutes}
                onChange={() => onMinutes(minutes)}
                data-testid={`range-${minutes}`}
              />
              <span aria-label={`Last ${formatMinutes(minutes)}`}>{shortName(minutes)}</span>
            </label>
          ))}
        </fieldset>
      </div>
      <div className="charts" aria-busy={info.status === "loading"}>
        {data.map(({ spec, series, times }) => (
          <TimeChart
            key={spec.id}
            id={spec.id}
            title={spec.title}
            times={times}
            series={series}
            format={spec.format}
            axisFormat={spec.axisFormat}
          />
        ))}
      </div>
    </section>
  );
}
