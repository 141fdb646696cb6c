-- Issue 15: the tolerant casts of staging (load: nine per student block, three per contact;
-- contacts; apply) were PL/pgSQL functions with an EXCEPTION block, so every call, NULL
-- included, opened and closed a subtransaction. PostgreSQL 16's pg_input_is_valid() asks
-- the type's input function the same question without raising an error, so each cast is
-- now a one-line SQL function the planner inlines into the calling statement: the same
-- value (the input function's own rules: DateStyle, 'yes'/'on' booleans, int4 range) and
-- NULL wherever the cast would fail. STABLE, as the casts themselves are (date input reads
-- DateStyle); no index or constraint uses these functions.
CREATE OR REPLACE FUNCTION staging.try_date(v text) RETURNS date LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN pg_input_is_valid(v, 'date') THEN v::date END
$$;

CREATE OR REPLACE FUNCTION staging.try_int(v text) RETURNS int LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN pg_input_is_valid(v, 'integer') THEN v::int END
$$;

CREATE OR REPLACE FUNCTION staging.try_bool(v text) RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN pg_input_is_valid(v, 'boolean') THEN v::boolean END
$$;
