import { useMemo } from "react";

import { formatCompact, formatInteger, formatUsd, formatUsdCompact } from "../format";
import type { Sample } from "../state";
import { TimeChart, type ChartSeries } from "./TimeChart";

interface Props {
  history: Sample[];
}

export function Charts({ history }: Props) {
  const data = useMemo(() => {
    const times = history.map((s) => s.t / 1000);
    const col = (key: keyof Sample) => history.map((s) => s[key]);
    const active: ChartSeries[] = [{ label: "Active users", color: "#2563eb", values: col("activeUsers") }];
    const generations: ChartSeries[] = [
      { label: "Websites", color: "#7c3aed", values: col("websitesGenerated") },
      { label: "Images", color: "#0d9488", values: col("imagesGenerated") },
      { label: "Failed", color: "#dc2626", values: col("failedGenerations") },
    ];
    const revenue: ChartSeries[] = [{ label: "Revenue today", color: "#15803d", values: col("revenueToday") }];
    return { times, active, generations, revenue };
  }, [history]);

  return (
    <section className="card" aria-labelledby="trends-title" id="trends">
      <div className="section-head">
        <h2 id="trends-title">Last 30 minutes</h2>
        <p className="muted">Kept in this page since it opened; hover a chart for values.</p>
      </div>
      <div className="charts">
        <TimeChart
          id="chart-active"
          title="Active users"
          times={data.times}
          series={data.active}
          format={formatInteger}
          axisFormat={formatCompact}
        />
        <TimeChart
          id="chart-generations"
          title="Generations (totals)"
          times={data.times}
          series={data.generations}
          format={formatInteger}
          axisFormat={formatCompact}
        />
        <TimeChart
          id="chart-revenue"
          title="Revenue today"
          times={data.times}
          series={data.revenue}
          format={formatUsd}
          axisFormat={formatUsdCompact}
        />
      </div>
    </section>
  );
}
