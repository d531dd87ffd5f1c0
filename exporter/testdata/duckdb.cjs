// Reads the export with DuckDB (@duckdb/node-api), independently of the
// Parquet code that wrote it. Standard input: a JSON array of SQL queries.
// Standard output: a JSON array with, per query, its rows as objects whose
// values are strings (null stays null). Cast decimals to VARCHAR in SQL to
// keep them exact.
const { DuckDBInstance } = require('@duckdb/node-api');

async function main() {
  const queries = JSON.parse(require('fs').readFileSync(0, 'utf8'));
  const instance = await DuckDBInstance.create(':memory:');
  const conn = await instance.connect();
  const out = [];
  for (const q of queries) {
    const reader = await conn.runAndReadAll(q);
    const names = reader.columnNames();
    out.push(reader.getRows().map((row) => {
      const o = {};
      row.forEach((v, i) => { o[names[i]] = v === null ? null : String(v); });
      return o;
    }));
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => { process.stderr.write(String(e && e.stack || e) + '\n'); process.exit(1); });
