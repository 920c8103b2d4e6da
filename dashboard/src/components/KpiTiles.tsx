import { formatClock, formatInteger, formatRelative, formatUsd, parseTime } from "../format";
import type { FigureKey, PlatformFigures } from "../types";
import { useNow } from "../useNow";

interface Props {
  figures: Partial<PlatformFigures>;
  updatedAt: string | null;
  updatedBy: string | null;
  analyticsOn: boolean;
}

const TILES: { key: FigureKey; label: string; format: (value: number) => string }[] = [
  { key: "totalUsers", label: "Total users", format: formatInteger },
  { key: "activeUsers", label: "Active users", format: formatInteger },
  { key: "newUsersToday", label: "New users today", format: formatInteger },
  { key: "websitesGenerated", label: "Websites generated", format: formatInteger },
  { key: "imagesGenerated", label: "Images generated", format: formatInteger },
  { key: "failedGenerations", label: "Failed generations", format: formatInteger },
  { key: "totalRevenue", label: "Revenue", format: formatUsd },
  { key: "revenueToday", label: "Revenue today", format: formatUsd },
];

export function KpiTiles({ figures, updatedAt, updatedBy, analyticsOn }: Props) {
  const now = useNow(1000);
  const at = updatedAt ? parseTime(updatedAt) : null;
  return (
    <section className="card" aria-labelledby="figures-title" id="figures">
      <div className="section-head">
        <h2 id="figures-title">Live figures</h2>
        <p className="muted" data-testid="last-update" data-timestamp={updatedAt ?? ""}>
          {at === null ? (
            "Waiting for the first figures…"
          ) : (
            <>
              Last update <time dateTime={updatedAt ?? undefined}>{formatClock(at)}</time> ({formatRelative(at, now)}
              {updatedBy ? `, ${updatedBy}` : ""})
            </>
          )}
          {!analyticsOn && <span className="paused"> · live updates off</span>}
        </p>
      </div>
      <ul className="tiles">
        {TILES.map(({ key, label, format }) => {
          const value = figures[key];
          return (
            <li key={key} className="tile" data-testid={`kpi-${key}`} data-value={value ?? ""}>
              <span className="tile-label">{label}</span>
              <span className="tile-value">{value === undefined ? "—" : format(value)}</span>
            </li>
          );
        })}
      </ul>
    </section>
  );
}
