"""Foreign-key checks once their referenced table is analysed mid-snapshot (issue 15, 0048, 0049).

Autovacuum analyses raw.inbound_block early in an LA's first snapshot, while each file is a
common value: the planner then estimates a new file at one row. The foreign-key checks of the
tables that reference a block by (file_id, ordinal) (staging.*, the hash cache) must still
probe the primary key, not an index led by file_id alone with the ordinal as a filter (which
read every block of the file for each referencing row: a school's load grew with the square of
its size). Load's statements, which name a block type, must still read only that type's
blocks. core.contact likewise for its links' checks, with a base it has not seen yet."""
FILES = 5
BLOCKS_PER_FILE = 3000
TYPES = ("student", "address", "contacts", "sen")


def _analysed_blocks(db) -> int:
    """FILES files of BLOCKS_PER_FILE blocks, analysed; the id the next file will get."""
    file_ids = [db.execute(
        """INSERT INTO raw.inbound_file (base_id, task_key, dag_id, run_id, window_end, window_order, seq, source,
                                         data_filter, label, content_type, size_bytes, sha256, status)
           VALUES ('9990001', 'snapshot', 'b2b__9990001__snapshot', %s, '2026-10-03 17:00+00',
                   '20261003170000|b2b__9990001__snapshot', %s, 'sims7', 'snapshot', 'export', 'application/xml',
                   1, 'x', 'loaded') RETURNING file_id""", (f"r{k}", k + 1)).fetchone()[0] for k in range(FILES)]
    for f in file_ids:
        db.execute("""INSERT INTO raw.inbound_block (file_id, ordinal, base_id, block_type, student_guid, content)
                      SELECT %s, k, '9990001', (%s::text[])[1 + k %% 4], 'g' || k, '{}'::jsonb
                        FROM generate_series(1, %s) k""", (f, list(TYPES), BLOCKS_PER_FILE))
    db.commit()
    db.execute("ANALYZE raw.inbound_block")
    return max(file_ids) + 1


def _plan(db, sql: str, params=None) -> str:
    return "\n".join(r[0] for r in db.execute("EXPLAIN " + sql, params))


def test_foreign_key_checks_of_a_new_file_probe_the_primary_key_after_analyse(db):
    new = _analysed_blocks(db)
    # the statement PostgreSQL's foreign-key check runs, with the values of one referencing row
    # (a custom plan: what the check's first executions and any cheaper-than-generic ones use)
    check = f"SELECT 1 FROM ONLY raw.inbound_block x WHERE file_id = {new} AND ordinal = 7 FOR KEY SHARE OF x"
    plan = _plan(db, check)
    assert "inbound_block_pkey" in plan, plan
    assert "Filter" not in plan, plan  # (the ordinal is part of the probe, not read block by block)


def test_loading_one_block_type_reads_only_that_types_blocks(db):
    from b2b.blocks import BLOCKS, load_sql

    new = _analysed_blocks(db) - 1  # an analysed file this time: the type's share is known
    db.execute("SET enable_seqscan = off")  # (a small table: what the index offers, not a scan)
    student = next(b for b in BLOCKS if b.name == "student")
    plan = _plan(db, load_sql(student), {"files": [new]})
    assert "inbound_block_type_file_idx" in plan, plan


def test_contact_link_checks_of_a_new_base_probe_the_primary_key_after_analyse(db):
    db.execute("""INSERT INTO core.contact (base_id, person_id, forename, surname, username, email_preference,
                                            telephone_preference, roles, active, created_window, updated_window)
                  SELECT 'b' || (k % 5), 'p' || k, 'F', 'S', 'u' || k || '@example.org', 'Personal', 'None',
                         '{contact}', true, 'w', 'w'
                    FROM generate_series(1, 15000) k""")
    db.commit()
    db.execute("ANALYZE core.contact")
    check = "SELECT 1 FROM ONLY core.contact x WHERE base_id = 'b9' AND person_id = 'p7' FOR KEY SHARE OF x"
    plan = _plan(db, check)
    assert "contact_pkey" in plan and "Filter" not in plan, plan
    # the contacts stage's look-up of an account name in a base still probes the username index
    db.execute("SET enable_seqscan = off")
    plan = _plan(db, "SELECT person_id FROM core.contact WHERE base_id = 'b9' AND lower(username) = 'u7@example.org'")
    assert "contact_username_key" in plan, plan
