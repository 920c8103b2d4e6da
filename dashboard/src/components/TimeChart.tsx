import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

import { formatClock } from "../format";

export interface ChartSeries {
  label: string;
  color: string;
  values: (number | null)[];
}

interface Props {
  id: string;
  title: string;
  /** Sample times, seconds since the epoch. */
  times: number[];
  series: ChartSeries[];
  format: (value: number) => string;
  axisFormat: (value: number) => string;
  height?: number;
}

/** A small uPlot line chart that follows its container's width. */
export function TimeChart({ id, title, times, series, format, axisFormat, height = 180 }: Props) {
  const host = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const formatRef = useRef({ format, axisFormat });
  formatRef.current = { format, axisFormat };
  const labels = series.map((s) => `${s.label}|${s.color}`).join(",");

  useEffect(() => {
    const element = host.current;
    if (!element) return;
    const options: uPlot.Options = {
      width: Math.max(element.clientWidth, 200),
      height,
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: { x: { time: true } },
      series: [
        { label: "Time", value: (_u: uPlot, v: number | null) => (v == null ? "—" : formatClock(v * 1000)) },
        ...labels.split(",").map((entry) => {
          const [label, color] = entry.split("|");
          return {
            label,
            stroke: color,
            width: 2,
            points: { show: false },
            value: (_u: uPlot, v: number | null) => (v == null ? "—" : formatRef.current.format(v)),
          };
        }),
      ],
      axes: [
        {
          stroke: "#5b6472",
          grid: { stroke: "#e6e9ef" },
          ticks: { stroke: "#e6e9ef" },
          space: 90,
          // Whole seconds and up (uPlot would otherwise tick every 200 ms when the page is young).
          incrs: [1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200],
          values: (_u: uPlot, splits: number[]) => splits.map((v) => formatClock(v * 1000)),
        },
        {
          stroke: "#5b6472",
          grid: { stroke: "#e6e9ef" },
          ticks: { stroke: "#e6e9ef" },
          size: 64,
          values: (_u: uPlot, splits: number[]) => splits.map((v) => formatRef.current.axisFormat(v)),
        },
      ],
    };
    const chart = new uPlot(options, [[]], element);
    plot.current = chart;
    let width = element.clientWidth;
    const observer = new ResizeObserver(() => {
      const next = element.clientWidth;
      if (next !== width && next > 0) {
        width = next;
        window.requestAnimationFrame(() => chart.setSize({ width: Math.max(next, 200), height }));
      }
    });
    observer.observe(element);
    return () => {
      observer.disconnect();
      chart.destroy();
      plot.current = null;
    };
  }, [labels, height]);

  useEffect(() => {
    plot.current?.setData([times, ...series.map((s) => s.values)] as uPlot.AlignedData);
  }, [times, series, labels]);

  const latest = series
    .map((s) => {
      const value = s.values[s.values.length - 1];
      return `${s.label} ${value == null ? "no data" : format(value)}`;
    })
    .join("; ");
  const summary = times.length === 0 ? "No data yet." : `Latest: ${latest}. ${times.length} samples.`;

  return (
    <figure className="chart" data-samples={times.length} aria-labelledby={`${id}-caption`} aria-describedby={`${id}-summary`}>
      <figcaption id={`${id}-caption`}>{title}</figcaption>
      <div ref={host} className="chart-host" aria-hidden="true" />
      <p id={`${id}-summary`} className="visually-hidden">
        {summary}
      </p>
    </figure>
  );
}
