/** One line of a benchmark table: `ok` is unset for reference figures that have no target. */
export interface Row {
  metric: string;
  value: string;
  target: string;
  ok?: boolean;
}

/** A titled markdown table, or nothing when there are no rows (a table left out by BENCH_ONLY). */
export function formatTable(title: string, rows: Row[]): string {
  return formatGrid(
    title,
    ['metric', 'measured', 'target', ''],
    rows.map((row) => [row.metric, row.value, row.target, row.ok === undefined ? '' : row.ok ? 'ok' : 'MISSED']),
  );
}

/**
 * A titled markdown table of any columns, or nothing when there are no rows. A `|` in a cell is
 * escaped so it cannot split the cell.
 */
export function formatGrid(title: string, columns: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  if (rows.length === 0) return '';
  const line = (cells: readonly string[]) => `| ${cells.map((cell) => cell.replaceAll('|', '\\|')).join(' | ')} |`;
  const lines = [title, '', line(columns), `|${columns.map(() => '---|').join('')}`, ...rows.map(line)];
  return `\n${lines.join('\n')}\n`;
}
