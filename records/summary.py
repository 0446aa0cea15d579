"""Per-city summary of the warehouse, for the demo and for analysts."""

from __future__ import annotations

import duckdb
import pandas as pd

from records.geography import city_case_sql


def city_summary(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Households, share operating, records per kind, abnormal share, penalties per 1,000.

    Penalties counted are the published ones (the only ones a platform-facing product
    may ever use).
    """
    city = city_case_sql("h.division_code")
    return con.execute(
        f"""
        WITH h AS (SELECT uscc, {city} AS city, status FROM households h),
        counts AS (
            SELECT 'registration_changes' AS kind, uscc FROM registration_changes
            UNION ALL SELECT 'annual_reports', uscc FROM annual_reports
            UNION ALL SELECT 'abnormal_status', uscc FROM abnormal_status
            UNION ALL SELECT 'penalties_published', uscc FROM penalties WHERE published_on IS NOT NULL
            UNION ALL SELECT 'serious_dishonesty', uscc FROM serious_dishonesty
            UNION ALL SELECT 'spot_checks', uscc FROM spot_checks
        ),
        by_city AS (
            SELECT h.city, c.kind, count(*) AS n FROM counts c JOIN h USING (uscc) GROUP BY ALL
        ),
        pivoted AS (
            PIVOT by_city ON kind IN ('registration_changes', 'annual_reports', 'abnormal_status',
                'penalties_published', 'serious_dishonesty', 'spot_checks') USING sum(n) GROUP BY city
        ),
        base AS (
            SELECT city, count(*) AS households,
                avg((status = 'operating')::INT) AS share_operating,
                avg((uscc IN (SELECT uscc FROM abnormal_status))::INT) AS share_ever_abnormal
            FROM h GROUP BY city
        )
        SELECT b.city, b.households, round(b.share_operating, 3) AS operating,
            COALESCE(p.registration_changes, 0)::BIGINT AS changes,
            COALESCE(p.annual_reports, 0)::BIGINT AS reports,
            COALESCE(p.abnormal_status, 0)::BIGINT AS abnormal,
            COALESCE(p.penalties_published, 0)::BIGINT AS penalties,
            COALESCE(p.serious_dishonesty, 0)::BIGINT AS serious,
            COALESCE(p.spot_checks, 0)::BIGINT AS spot_checks,
            round(b.share_ever_abnormal, 3) AS ever_abnormal,
            round(1000.0 * COALESCE(p.penalties_published, 0) / b.households, 1) AS penalties_per_1k
        FROM base b LEFT JOIN pivoted p USING (city)
        ORDER BY b.households DESC
        """
    ).df()
