-- A read-only ClickHouse user for Grafana, for releases with SQL access
-- control (20.5 and later), run as an administrator. Unlike the users.d
-- file for older releases, it grants the dashboards' tables only: the
-- API's users and sessions (password and token hashes), the audit trail
-- and the operators' queue jobs stay unreadable.
CREATE SETTINGS PROFILE IF NOT EXISTS exim_pilot_readonly
    SETTINGS readonly = 1,
             max_execution_time = 60 CHANGEABLE_IN_READONLY,
             max_memory_usage = 4000000000,
             optimize_move_to_prewhere = 0;

CREATE USER IF NOT EXISTS grafana
    IDENTIFIED WITH sha256_password BY 'REPLACE_WITH_THE_PASSWORD'
    HOST LOCAL
    SETTINGS PROFILE exim_pilot_readonly;

GRANT SELECT ON exim_pilot.events TO grafana;
GRANT SELECT ON exim_pilot.lifecycles TO grafana;
GRANT SELECT ON exim_pilot.attempts TO grafana;
GRANT SELECT ON exim_pilot.rejects TO grafana;
GRANT SELECT ON exim_pilot.unparsed TO grafana;
GRANT SELECT ON exim_pilot.host_stats TO grafana;
GRANT SELECT ON exim_pilot.events_hourly TO grafana;
GRANT SELECT ON exim_pilot.rejects_hourly TO grafana;
GRANT SELECT ON exim_pilot.queue_snapshots TO grafana;
GRANT SELECT ON exim_pilot.queue_messages TO grafana;
