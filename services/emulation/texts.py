"""Benchmark input texts whose surface carries real but noisy signal of their difficulty.

`render(domain, rng, d)` writes one request of a domain for a latent difficulty `d` in [0, 1]:
a programming task (code), a question naming the tables it needs (sql), a four-option question
(mcq) or a word or competition problem (math). The text never states `d`; like a real prompt it
shows it through what it asks for and the words it uses: a string task or a graph algorithm, a
lookup or a rolling window over groups, an everyday term or a specialist one, one-step
arithmetic or constrained counting. Each domain draws a few such features from vocabularies
ordered easy -> hard (the task or question, its constraints, framing or hints); counts (of
constraints, tables) play a small part, as sentence embeddings read them poorly.

The noise: with probability MISLABEL the whole surface is drawn for an unrelated difficulty (a
request that looks harder or easier than it is); otherwise each feature is drawn around its own
level `d + N(0, sd)`, clipped to [0, 1], independently of the other features, so they disagree
and none is exact; topics, entities, numbers and templates are drawn whatever the difficulty.

Short, as real prompts of these kinds are: the router embeds every request within its latency
budget (~0.18 ms per MiniLM token), so a text is one to three sentences, ~35 tokens on average
and at most ~60 (character limits per domain keep it so).

Deterministic: all randomness comes from `rng` (its scalar `random()` and `normal()` only).
"""

from __future__ import annotations

import numpy as np

DOMAINS = ("code", "sql", "mcq", "math")
MISLABEL = 0.03
"""Share of requests whose surface is drawn for an unrelated difficulty."""
FEATURE_SD = 0.12
"""Noise of each surface feature's level around the request's difficulty.

These two set how well a router can read difficulty from the text. With 12% mislabelled
surfaces and a 0.2 spread, no router kept accuracy within a point of the largest
configuration while saving much (a mislabelled hard request that looks easy loses its
answer); at these values the signal is still far from exact (see test_bench_texts)."""


def _records(block: str) -> tuple[str, ...]:
    """The ';'-separated records of a (line-wrapped) vocabulary block."""
    return tuple(r.strip() for r in " ".join(block.split()).split(";") if r.strip())


# --- noisy draws ----------------------------------------------------------------------------

def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.random() * len(seq))]


def _level(rng: np.random.Generator, s: float, sd: float) -> float:
    """A feature's raw level: the surface difficulty plus this feature's own noise (kept when
    `rng` is a `_LevelsKept`). Every feature is drawn through here."""
    x = s + sd * rng.normal()
    if isinstance(rng, _LevelsKept):
        rng.levels.append(x)
    return x


def _lv(rng: np.random.Generator, s: float, sd: float = FEATURE_SD) -> float:
    """A feature's level, clipped to [0, 1]."""
    return min(1.0, max(0.0, _level(rng, s, sd)))


def _n(rng: np.random.Generator, s: float, lo: int, hi: int, sd: float = FEATURE_SD) -> int:
    """A count in [lo, hi] around the level s."""
    return lo + min(hi - lo, int(_lv(rng, s, sd) * (hi - lo + 1)))


def _at(rng: np.random.Generator, s: float, n: int, sd: float) -> int:
    """An index into n ordered items near the position s sets (reflected at the ends, so the
    first and last items are not over-drawn)."""
    x = abs(_level(rng, s, sd))
    return min(n - 1, int((2.0 - x if x > 1.0 else x) * n))


def _graded(rng: np.random.Generator, s: float, seq, sd: float = FEATURE_SD):
    """An item of `seq` (ordered common -> rare, easy -> hard) near the position s sets."""
    return seq[_at(rng, s, len(seq), sd)]


def _graded_distinct(
    rng: np.random.Generator, s: float, seq, k: int, sd: float = FEATURE_SD
) -> list:
    """k distinct items of seq, each near the level's position (the nearest free one if taken)."""
    free, out = list(range(len(seq))), []
    for _ in range(min(k, len(seq))):
        want = _at(rng, s, len(seq), sd)
        i = min(free, key=lambda j: (abs(j - want), j))
        free.remove(i)
        out.append(seq[i])
    return out


def _sample(rng: np.random.Generator, seq, k: int) -> list:
    """k distinct items of seq in random order."""
    pool, out = list(seq), []
    for _ in range(min(k, len(pool))):
        out.append(pool.pop(int(rng.random() * len(pool))))
    return out


def _r(rng: np.random.Generator, lo: int, hi: int) -> int:
    """A uniform integer in [lo, hi]."""
    return lo + int(rng.random() * (hi - lo + 1))


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fit(parts: list[str], limit: int, drop: tuple = ()) -> str:
    """Join the parts; while longer than `limit` characters, leave out the optional parts in
    `drop` (in that order), and as a last resort cut."""
    parts = [p for p in parts if p]
    for p in drop:
        if len(" ".join(parts)) <= limit:
            break
        if p in parts:
            parts.remove(p)
    return " ".join(parts)[:limit]


# --- code: short programming tasks (MBPP / HumanEval-like) ----------------------------------

CODE_TASKS = _records("""
count_vowels(s)|counts the vowels in a string; sum_multiples(nums)|returns the sum of the multiples
of {k} in a list; reverse_words(s)|reverses the order of the words in a sentence;
is_palindrome(s)|checks whether a string reads the same backwards; to_fahrenheit(temps)|converts
Celsius temperatures to Fahrenheit, rounded to {k} decimals; max_of_three(a, b, c)|returns the
largest of three numbers; frequent_words(text)|returns the words used at least {k} times in a text;
dedupe(items)|removes duplicates from a list, keeping the first of each; title_case(s)|capitalizes
the first letter of every word; second_largest(nums)|returns the second largest value in a list;
chunk(items, k)|splits a list into chunks of {k} items; is_anagram(a, b)|checks whether two words
are anagrams; rle(s)|compresses a string with run-length encoding; balanced(expr)|checks whether
the brackets in an expression are balanced; roman_to_int(s)|converts a Roman numeral to an integer;
flatten(nested)|flattens an arbitrarily nested list; group_anagrams(words)|groups a list of words
into anagram classes; top_k(items, k)|returns the {k} most frequent items;
merge_intervals(iv)|merges overlapping intervals; rotate(matrix)|rotates a square matrix 90 degrees
in place; spiral(grid)|returns a matrix's elements in spiral order; parse_duration(s)|parses
durations like '1h30m' into seconds; longest_unique(s)|finds the longest substring without repeated
characters; search_rotated(nums, x)|binary-searches a rotated sorted array;
count_islands(grid)|counts the islands of at least {k} cells in a grid of 0s and 1s;
min_rooms(meetings)|returns the fewest meeting rooms a schedule needs; edit_distance(a, b)|computes
the Levenshtein edit distance with dynamic programming; lis(nums)|finds a longest increasing
subsequence by patience sorting; topo_order(deps)|orders tasks topologically and reports any
dependency cycle; dijkstra(graph, src)|computes shortest paths in a weighted graph with a priority
queue; LRUCache(cap)|implements an LRU cache with O(1) get and put; evaluate(expr)|evaluates
arithmetic with operator precedence and parentheses; glob_match(s, p)|matches text against a
wildcard pattern with backtracking; min_window(s, t)|finds the minimum window substring covering a
multiset of characters; max_profit_jobs(jobs)|schedules weighted jobs for maximum profit with DP
and binary search; RunningMedian()|maintains a streaming median with two heaps;
merge_accounts(accts)|merges accounts sharing an email using union-find with path compression;
regex_match(s, p)|implements regular-expression matching with '.' and Kleene star;
Codec()|serializes and deserializes a binary tree; max_flow(cap, s, t)|computes maximum flow with
Edmonds-Karp augmenting paths; suffix_array(s)|builds a suffix array and LCP array by prefix
doubling; tarjan_scc(graph)|finds strongly connected components with Tarjan's lowlink algorithm;
tsp(dist)|solves the travelling salesman problem by bitmask dynamic programming;
SegmentTree(nums)|supports range-minimum queries with lazy propagation;
convex_hull(points)|computes a convex hull with Andrew's monotone chain; hungarian(cost)|finds a
minimum-cost assignment with the Hungarian algorithm; PersistentTreap()|implements a persistent
treap with versioned split and merge
""")
"""`signature|what it does`, easy -> hard (string basics -> graph algorithms and DP)."""
CODE_CONSTRAINTS = _records("""
Assume the input is non-empty.; Strings have at most {big} characters.; Ignore letter case.;
Inputs hold at most {big} items.; Values lie between -{big} and {big}.; Return an empty list for
empty input.; Do not modify the input.; Add type hints.; Raise ValueError on bad
input.; Keep equal elements in order.; Break ties lexicographically.; It must run in linear time.;
Inputs can hold 10^{e} elements.; It must run in O(n log n) time.; Avoid recursion, nesting can
reach 10^{e}.; Use O(1) extra space.; Make each operation amortized O(1).; Handle cycles and
self-loops.; It must be thread-safe.; Use exact rationals, never floats.; Use bounded memory on
endless streams.; Answer 10^{e} queries online in O(log n).
""")
"""Ordered common -> demanding."""
CODE_CONTEXTS = _records("""
an inventory service; a logistics dashboard; a genomics pipeline; a chat app; a billing system; a
school timetable; a weather logger; a game server; a library catalog; a fitness tracker; a CI tool;
a recipe site; a warehouse robot; a trading backtester; a hospital scheduler; a playlist app; a log
analyzer; a survey tool; a travel site; an IoT gateway; a spreadsheet plugin; a text editor; a
ride-sharing backend; a museum kiosk; a payroll script; a sensor network; a farm app; an email
client; a code review bot; a parking system; a news aggregator; a robotics lab
""")
CODE_HEADS = ("Write a Python function that {desc}.", "Write a function that {desc}.",
              "Implement `{sig}`, which {desc}.", "Complete `{sig}`: it {desc}.",
              "Write `{sig}` that {desc}.", "Create a Python function that {desc}.",
              "Define a function which {desc}.", "Code a function that {desc}.",
              "Give a Python function that {desc}.", "Implement a function that {desc}.",
              "We need a function that {desc}.", "Your task: write code that {desc}.",
              "Please write a function that {desc}.", "Build a helper that {desc}.",
              "Write Python code that {desc}.", "Add a utility that {desc}.",
              "Task: implement a function that {desc}.", "Write a small function that {desc}.",
              "Can you write a function that {desc}?", "Provide a Python function that {desc}.")
CODE_NEUTRAL = ("Return the result.", "Use clear names.", "Standard library only.",
                "Follow PEP 8.", "No printing.", "Avoid globals.", "Keep it under {lines} lines.",
                "Target Python 3.{minor}.", "Tests call it directly.",
                "Aim for {lines} lines or less.")
"""Notes that say nothing about difficulty."""
CODE_LIMIT = 180
"""Characters; with the limits of the other domains it keeps every text within ~60 tokens."""


def _code(rng: np.random.Generator, s: float) -> str:
    sig, desc = _graded(rng, s, CODE_TASKS).split("|")
    head = _pick(rng, CODE_HEADS).format(sig=sig, desc=desc.format(k=_r(rng, 2, 9)))
    num = {"big": 10 * _r(rng, 2, 99), "e": _r(rng, 5, 7), "lines": _r(rng, 10, 60),
           "minor": _r(rng, 8, 13)}
    cons = [c.format(**num) for c in _graded_distinct(rng, s, CODE_CONSTRAINTS, _n(rng, s, 1, 2))]
    note = _pick(rng, CODE_NEUTRAL).format(**num) if rng.random() < 0.8 else ""
    if rng.random() < 0.15:
        ctx = f"For {_pick(rng, CODE_CONTEXTS)}, {head[:1].lower()}{head[1:]}"
        if len(" ".join([ctx, *cons, note])) <= CODE_LIMIT:
            head = ctx
    return _fit([head, *cons, note], CODE_LIMIT, drop=(note, *cons[1:]))


# --- sql: questions naming the tables they need (Spider / BIRD-like) -----------------------

SCHEMAS = _records("""
customers(name, region:north|south|east, credit_limit, joined_at) > orders(order_no,
status:open|shipped|returned, total, placed_at) > shipments(tracking_no, carrier:UPS|DHL|FedEx,
weight_kg, shipped_at) > claims(claim_no, reason:damaged|lost|late, amount, filed_at);
departments(title, site:Boston|Austin|Denver, budget, opened_on) > employees(full_name,
level:junior|senior|principal, salary, hired_on) > timesheets(week_code,
project_type:internal|client|research, hours, submitted_at) > approvals(approver,
outcome:approved|rejected|pending, amount, decided_at); hospitals(name, state:CA|TX|NY, bed_count,
founded_on) > doctors(name, specialty:cardiology|oncology|pediatrics, years_experience,
licensed_on) > appointments(code, kind:checkup|surgery|followup, duration_min, scheduled_at) >
prescriptions(drug_name, form:tablet|injection|syrup, dose_mg, issued_at); schools(name,
district:north|central|harbor, enrollment, opened_on) > teachers(name,
subject:math|history|biology, salary, hired_on) > courses(title, term:fall|spring|summer, credits,
starts_on) > enrollments(student_name, grade:A|B|C, score, enrolled_on); authors(name,
country:Kenya|Chile|Japan, birth_year, debut_on) > books(title, genre:mystery|fantasy|poetry,
pages, published_on) > loans(loan_code, branch:central|eastside|harbor, days_out, borrowed_on) >
fines(fine_code, status:paid|unpaid|waived, amount, assessed_on); airlines(name,
alliance:Star|Oneworld|SkyTeam, fleet_size, founded_on) > flights(flight_no,
route_type:domestic|international, distance_km, departs_at) > bookings(pnr,
cabin:economy|premium|business, fare, booked_at) > bags(tag_no, kind:carry_on|checked|oversize,
weight_kg, checked_at); artists(name, label_type:indie|major, followers, debut_on) > albums(title,
format:vinyl|digital|cd, track_count, released_on) > tracks(title, mood:calm|upbeat|dark,
length_sec, added_on) > plays(listener, device:mobile|desktop|speaker, seconds_played, played_at);
studios(name, country:USA|France|India, headcount, founded_on) > movies(title, rating:G|PG|R,
budget, released_on) > screenings(screen_code, format:IMAX|3D|standard, seats_sold, starts_at) >
tickets(ticket_no, type:adult|child|senior, price, sold_at); leagues(name,
sport:soccer|hockey|basketball, team_count, founded_on) > teams(name, city:Lyon|Porto|Leeds,
payroll, founded_on) > players(name, position:forward|defender|goalkeeper, salary, signed_on) >
injuries(injury_code, severity:minor|moderate|severe, days_out, reported_on); branches(name,
city:Oslo|Dublin|Quito, deposits, opened_on) > accounts(account_no, type:checking|savings|business,
balance, opened_on) > transactions(txn_ref, channel:atm|online|teller, amount, posted_at) >
disputes(case_no, status:open|won|lost, amount, raised_at); warehouses(code, region:EU|APAC|NA,
capacity, opened_on) > products(sku, category:tools|toys|garden, unit_price, listed_on) >
stock_moves(move_ref, reason:restock|sale|damage, quantity, moved_at) > audits(audit_no,
result:pass|fail, discrepancy, audited_on); hotels(name, city:Lisbon|Kyoto|Denver, stars,
opened_on) > rooms(room_no, type:single|double|suite, nightly_rate, renovated_on) >
reservations(confirmation, channel:direct|agency|app, nights, checkin_on) > reviews(reviewer,
sentiment:positive|neutral|negative, score, posted_on); farms(name, county:Marin|Kent|Yolo, acres,
founded_on) > fields(field_code, crop:wheat|corn|barley, hectares, planted_on) > harvests(batch_no,
quality:A|B|C, yield_tons, harvested_on) > sales(invoice_no, buyer_type:mill|coop|export, revenue,
sold_on); museums(name, city:Rome|Cairo|Lima, annual_visitors, opened_on) > exhibits(title,
theme:ancient|modern|science, item_count, opens_on) > artifacts(catalog_no,
material:bronze|clay|stone, estimated_value, acquired_on) > condition_reports(report_no,
condition:good|fair|poor, damage_score, inspected_on); gyms(name, city:Perth|Calgary|Lyon,
floor_area, opened_on) > members(name, plan:basic|plus|premium, monthly_fee, joined_on) >
visits(visit_ref, activity:weights|cardio|yoga, minutes, checked_in_at) > payments(receipt_no,
method:card|cash|transfer, amount, paid_on); restaurants(name, cuisine:thai|italian|mexican, seats,
opened_on) > menu_items(dish, course:starter|main|dessert, price, added_on) > order_lines(line_ref,
channel:dine_in|takeout|delivery, quantity, ordered_at) > complaints(ticket_no,
issue:cold|late|wrong, refund, logged_at); universities(name, country:Canada|Germany|Brazil,
endowment, founded_on) > labs(name, field:physics|chemistry|genomics, grant_total, established_on)
> papers(title, venue_type:journal|conference|preprint, citations, published_on) >
peer_reviews(reviewer, verdict:accept|revise|reject, score, submitted_on); cities(name,
province:north|coastal|inland, population, incorporated_on) > stations(code, kind:bus|rail|ferry,
daily_riders, opened_on) > trips(trip_ref, fare_class:standard|reduced|free, fare, started_at) >
incidents(report_no, type:delay|breakdown|security, minutes_lost, reported_at); vendors(name,
tier:gold|silver|bronze, rating, onboarded_on) > contracts(contract_no, kind:fixed|hourly|retainer,
value, signed_on) > invoices(invoice_no, status:paid|overdue|draft, amount, issued_on) >
remittances(reference, method:wire|check|card, amount_paid, paid_on); platforms(name,
kind:web|ios|android, monthly_users, launched_on) > users(handle, country:US|IN|BR, age,
signed_up_on) > sessions(session_ref, device:phone|tablet|desktop, duration_sec, started_at) >
events(event_ref, type:click|purchase|share, value, logged_at); clinics(name, region:urban|rural,
staff_count, opened_on) > pets(name, species:dog|cat|rabbit, weight_kg, born_on) >
vet_visits(visit_no, reason:vaccine|injury|checkup, cost, visited_on) > treatments(code,
drug_class:antibiotic|analgesic|vaccine, dose_ml, given_on); parks(name, state:Utah|Maine|Oregon,
area_km2, established_on) > trails(name, difficulty:easy|moderate|hard, length_km, opened_on) >
permits(permit_no, type:day|overnight|group, party_size, issued_on) > sightings(record_ref,
animal:elk|bear|eagle, animal_count, seen_at); publishers(name, country:UK|US|Spain, staff,
founded_on) > magazines(title, frequency:weekly|monthly|quarterly, circulation, launched_on) >
issues(issue_no, theme:travel|tech|food, page_count, published_on) > ads(ad_code,
size:full|half|quarter, price, booked_on); regions(name, zone:north|south|central, population,
created_on) > stores(store_code, format:mall|street|outlet, floor_area, opened_on) >
receipts(receipt_no, payment:card|cash|mobile, amount, sold_at) > returns(return_no,
reason:defect|size|changed_mind, refund, returned_on); projects(name, status:active|paused|done,
budget, started_on) > tickets(title, priority:low|medium|high, estimate_hours, created_at) >
commits(sha, kind:fix|feature|refactor, lines_changed, committed_at) > builds(build_no,
result:passed|failed|flaky, duration_sec, finished_at); ports(name, country:Peru|Norway|Egypt,
berths, opened_on) > vessels(name, flag:Panama|Liberia|Malta, tonnage, built_on) >
voyages(voyage_no, cargo:grain|oil|containers, distance_nm, departed_on) > inspections(report_no,
outcome:clear|detained|warning, deficiencies, inspected_on); counties(name, state:Ohio|Iowa|Texas,
population, formed_on) > precincts(code, area_type:urban|suburban|rural, registered_voters,
created_on) > ballot_batches(batch_no, method:mail|early|election_day, ballot_count, received_on) >
recounts(recount_no, result:confirmed|changed, vote_delta, completed_on); conferences(name,
field:AI|biology|economics, attendee_cap, held_on) > talks(title, track:main|workshop|poster,
duration_min, scheduled_at) > ratings(rater, channel:app|paper, score, submitted_at) >
questions(asker, topic:method|data|ethics, votes, asked_at); insurers(name, line:auto|home|life,
premiums_written, founded_on) > policies(policy_no, tier:basic|standard|premium, annual_premium,
starts_on) > claims(claim_no, cause:fire|theft|flood, amount, filed_on) >
settlements(settlement_no, outcome:paid|denied|partial, payout, settled_on); observatories(name,
site:Chile|Hawaii|Spain, altitude_m, opened_on) > telescopes(name, band:optical|radio|infrared,
aperture_m, commissioned_on) > observations(obs_ref, target_type:galaxy|star|comet, exposure_sec,
observed_at) > detections(detection_ref, class:transient|variable|stationary, magnitude,
flagged_at)
""")
"""Chains parent > child; each table: name(label, category:values, number, date)."""
SQL_ASKS = _records("""
List the {pl} of all {P}.; How many {P} are there?; Show the {pl} of {P} whose {pc} is '{v}'.; What
is the largest {pv} among {P}?; List {P} from highest to lowest {pv}.; How many {P} have {pc} '{v}'
and {pv} above {n}?; What is the average {pv} of {P} in each {pc}?; Which {pc} has the most {P}?;
List each {p1}'s {pl} with the number of its {C}.; What is the total {cv} of {C} for {P} whose {pc}
is '{v}'?; Which {P} have no {C} at all?; Which {P} have more than {k} {C}?; Find the {p1} whose
{C} have the largest total {cv}.; For each {pc}, what is the average {cv} of {C} per {p1}?; Which
{P} have a total {cv} of {C} above the average over all {P}?; For each {pc}, find the {p1} with the
highest total {cv} of {C}.; Rank {P} within each {pc} by the total {cv} of their {C}.; Give each
{pc}'s month-over-month change in total {cv} of {C}.; Give each {pc}'s share of the total {cv} of
{C}, with a cumulative share.; Compute a running total of {cv} per {p1}, ordered by {cd}.; For each
{pc}, find {P} whose monthly {cv} of {C} rose three months in a row.; For each {pc}, rank {P} by
the rolling 3-month median {cv} of their {C}.; Find pairs of {P} in the same {pc} whose {C} overlap
by more than {k} days.; For each {p1}, find the longest streak of consecutive days with at least
one {c1}.; Per {pc}, find the {pct}th percentile of {C} {cv}, excluding outliers beyond 2 sigma.
""")
"""Questions, easy -> hard (lookups -> joins and aggregates -> window functions, gaps and
islands, percentiles); {P}/{C}: a parent table and a child it joins to."""
SQL_MODS = _records("""
Only {X} from {year}.; Only {X} with {xc} '{xval}'.; Sort by {pl}.; Show at most {k} rows.; Skip
{X} without a {xl}.; Only {X} with {xv} between {n} and {n2}.; Break ties by {pl}.; Count each {x1}
once.; Treat missing {xv} as zero.; Exclude {P} below their {pc}'s average {pv}.; 'Recent' means
within 90 days of the latest {xd}.; Round shares to two decimals.; Fill empty months with zeros.;
Deduplicate {X} by {xl}, keeping the latest.
""")
"""Conditions and hints, easy -> hard; {X}: the last table the question uses."""
SQL_HINTS = ("count the rows.", "filter with WHERE.", "sort with ORDER BY.", "use MAX.",
             "use GROUP BY {pc}.", "join on the {p1} id.", "use HAVING.", "use a LEFT JOIN.",
             "use a subquery.", "use a CTE.", "use RANK() over each {pc}.", "use LAG by month.",
             "use a running SUM window.", "use a recursive CTE.", "use PERCENTILE_CONT.")
"""Evidence, BIRD-style, ordered easy -> hard."""
SQL_TABLES = ("Tables: {}.", "Using {}:", "Schema: {}.", "Given {}:", "With tables {}:")
SQL_TABLES_AFTER = ("Tables: {}.", "Use {}.", "Tables used: {}.", "Schema: {}.")


def _singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    if name.endswith(("ches", "shes", "sses", "xes")):
        return name[:-2]
    return name[:-1] if name.endswith("s") else name


def _parse_schema(line: str) -> list[dict]:
    tables = []
    for spec in line.split(" > "):
        name, cols = spec.rstrip(")").split("(")
        label, cat, num, date = cols.split(", ")
        cat, values = cat.split(":")
        tables.append({"name": name, "label": label, "cat": cat, "values": values.split("|"),
                       "num": num, "date": date, "words": name.replace("_", " "),
                       "word": _singular(name).replace("_", " ")})
    return tables


_SCHEMAS = tuple(_parse_schema(line) for line in SCHEMAS)


def _fields(t: dict, key: str, rng: np.random.Generator) -> dict:
    return {key.upper(): t["words"], key + "1": t["word"], key + "l": t["label"],
            key + "c": t["cat"], key + "v": t["num"], key + "d": t["date"],
            key + "val": _pick(rng, t["values"])}


def _sql(rng: np.random.Generator, s: float) -> str:
    schema = _pick(rng, _SCHEMAS)
    ask = _graded(rng, s, SQL_ASKS)
    joins = "{C}" in ask or "{c1}" in ask or "{cv}" in ask
    depth = 1 + (joins and _lv(rng, s) > 0.6)  # harder questions reach a grandchild table
    i = int(rng.random() * (len(schema) - depth))
    p, c = schema[i], schema[i + depth]
    f = _fields(p, "p", rng) | _fields(c, "c", rng) | _fields(c if joins else p, "x", rng)
    f["v"] = f["pval"]
    n = _pick(rng, (10, 20, 50, 100, 250, 500, 1000, 5000))
    f |= {"n": n, "n2": n * _r(rng, 2, 5), "k": _r(rng, 2, 12), "year": _r(rng, 2012, 2024),
          "pct": _pick(rng, (75, 80, 90, 95, 99))}
    mods = [m.format(**f) for m in _graded_distinct(rng, s, SQL_MODS, _n(rng, s, 0, 2))]
    hint = f"{_pick(rng, ('Hint', 'Evidence', 'Tip'))}: {_graded(rng, s, SQL_HINTS).format(**f)}"
    parts, tables = [ask.format(**f), *mods, hint], ""
    used = schema[i:i + depth + 1] if joins else [p]
    if rng.random() < 0.15 and len(used) < len(schema):  # an unused table, as real schemas have
        used = used + [schema[i + len(used)] if i + len(used) < len(schema) else schema[i - 1]]
    if rng.random() < 0.5:
        tables = _and([t["name"] for t in _sample(rng, used, len(used))])
        if rng.random() < 0.6:
            tables = _pick(rng, SQL_TABLES).format(tables)
            parts.insert(0, tables)
        else:
            tables = _pick(rng, SQL_TABLES_AFTER).format(tables)
            parts.append(tables)
    return _fit(parts, 195, drop=(tables, *mods[-1:]))


# --- mcq: knowledge / reasoning questions with four options (MMLU-like) ---------------------

SUBJECTS = _records("""
biology|a biology student|the cell membrane|photosynthesis|mitosis|DNA replication|enzyme
inhibition|gene expression|epistasis|Hardy-Weinberg equilibrium|horizontal gene transfer|codon
usage bias; chemistry|a chemist|boiling point|a covalent bond|pH|oxidation|Le Chatelier's
principle|activation energy|a chiral center|orbital hybridization|the entropy of mixing|the
Jahn-Teller distortion; physics|a physicist|gravity|friction|kinetic energy|momentum|centripetal
force|wave interference|angular momentum|Lorentz contraction|blackbody radiation|spin-orbit
coupling; astronomy|an astronomer|the lunar phases|a solar eclipse|an orbit|a red giant|stellar
parallax|redshift|the Chandrasekhar limit|the cosmic microwave background|the Roche
limit|gravitational lensing; economics|an economist|supply|demand|inflation|opportunity
cost|comparative advantage|marginal utility|the Phillips curve|a liquidity trap|Ricardian
equivalence|the Balassa-Samuelson effect; law|a judge|a
contract|negligence|precedent|jurisdiction|hearsay|consideration|res judicata|promissory
estoppel|the parol evidence rule|the rule against perpetuities; world history|a historian|the
printing press|the Silk Road|feudalism|the Renaissance|mercantilism|the Treaty of Westphalia|the
Congress of Vienna|the Investiture Controversy|the Tanzimat reforms|the Peace of Augsburg; US
history|a history teacher|the Boston Tea Party|the Louisiana Purchase|Reconstruction|the New
Deal|Marbury v. Madison|the Monroe Doctrine|the Wilmot Proviso|the Teapot Dome scandal|the Gadsden
Purchase|the Kansas-Nebraska Act; psychology|a psychologist|memory|motivation|classical
conditioning|cognitive dissonance|attachment theory|operant conditioning|the bystander effect|the
Yerkes-Dodson law|the fundamental attribution error|proactive interference; philosophy|a
philosopher|ethics|free will|utilitarianism|empiricism|the categorical imperative|the is-ought
problem|the Gettier problem|modal realism|supervenience|the Chinese room argument; computer
science|a programmer|an algorithm|a variable|recursion|binary search|big-O
notation|deadlock|NP-completeness|the halting problem|amortized analysis|Byzantine fault tolerance;
statistics|a statistician|the mean|the median|a sample|standard deviation|a p-value|a confidence
interval|statistical power|heteroscedasticity|Simpson's paradox|the Bonferroni correction;
anatomy|a medical student|the heart|the femur|the lungs|the cerebellum|the pancreas|the rotator
cuff|the brachial plexus|the loop of Henle|the sinoatrial node|the foramen ovale; clinical
medicine|a physician|fever|blood pressure|vaccination|antibiotic resistance|anemia|sepsis|nephrotic
syndrome|Cushing syndrome|pheochromocytoma|Guillain-Barre syndrome; nutrition|a
dietitian|protein|fiber|calories|vitamin C|saturated fat|iron absorption|thiamine deficiency|the
thermic effect of food|nitrogen balance|refeeding syndrome; geography|a geographer|latitude|a river
delta|the monsoon|plate tectonics|the tundra|permafrost|orographic lift|isostasy|the Humboldt
Current|karst topography; earth science|a geologist|erosion|a volcano|sedimentary rock|an
earthquake|the rock cycle|metamorphism|radiometric dating|the Mohorovicic discontinuity|isostatic
rebound|an ophiolite; environmental science|an ecologist|recycling|greenhouse
gases|deforestation|biodiversity|carbon sequestration|acid rain|the tragedy of the commons|ocean
acidification|the nitrogen cascade|trophic downgrading; marketing|a marketing
manager|advertising|brand loyalty|market segmentation|the marketing mix|customer lifetime
value|positioning|conjoint analysis|the Bass diffusion model|reference price effects|the decoy
effect; accounting|an accountant|revenue|expenses|the balance sheet|depreciation|working
capital|goodwill|the matching principle|lease capitalization|impairment testing|the equity method;
management|a manager|leadership|delegation|employee motivation|span of control|the balanced
scorecard|groupthink|the resource-based view|transaction cost economics|institutional
isomorphism|absorptive capacity; political science|a political scientist|democracy|the separation
of powers|federalism|a referendum|the median voter theorem|judicial review|the iron law of
oligarchy|consociationalism|the security dilemma|Arrow's impossibility theorem; sociology|a
sociologist|culture|socialization|social class|deviance|cultural capital|anomie|social
stratification|structuration theory|the Thomas theorem|habitus; linguistics|a linguist|a vowel|a
syllable|grammar|a dialect|a phoneme|a syntax tree|an allophone|ergativity|the Sapir-Whorf
hypothesis|vowel harmony; music theory|a music student|melody|rhythm|the major scale|a chord|the
circle of fifths|syncopation|the Neapolitan sixth|voice leading|the tritone substitution|hemiola;
art history|an art historian|the portrait|the fresco|linear
perspective|Impressionism|chiaroscuro|Cubism|Mannerism|the Ashcan School|Suprematism|the Nabis;
mathematics|a mathematician|a prime number|a fraction|a right angle|the Pythagorean theorem|a
vector space|an eigenvalue|uniform convergence|a Banach space|the Sylow theorems|a Galois
extension; pharmacology|a pharmacist|a dose|a side effect|half-life|the placebo effect|an
agonist|first-pass metabolism|the volume of distribution|competitive antagonism|zero-order
kinetics|inverse agonism; microbiology|a microbiologist|bacteria|a virus|a fungus|the Gram stain|an
antibiotic|a plasmid|quorum sensing|lysogeny|transduction|the Shine-Dalgarno sequence; electrical
engineering|an engineer|voltage|current|a resistor|a capacitor|Kirchhoff's laws|impedance|phase
margin|the Miller effect|the Smith chart|the skin effect; machine learning|a data
scientist|training data|overfitting|a decision tree|gradient descent|cross-validation|the
bias-variance tradeoff|the kernel trick|vanishing gradients|the VC dimension|double descent;
international relations|a diplomat|diplomacy|an alliance|a treaty|sovereignty|soft
power|deterrence|the democratic peace|two-level games|the Kindleberger trap|audience costs;
computer security|a security analyst|a password|a firewall|malware|phishing|two-factor
authentication|SQL injection|a side-channel attack|return-oriented programming|a padding
oracle|Rowhammer; world religions|a scholar of
religion|prayer|pilgrimage|monotheism|scripture|karma|the Eightfold Path|the Nicene
Creed|Zoroastrian dualism|the Filioque controversy|Madhyamaka; public health|an epidemiologist|hand
washing|vaccination|an epidemic|incidence|herd immunity|the basic reproduction
number|confounding|the number needed to treat|lead-time bias|the ecological fallacy; formal logic|a
logician|a premise|a conclusion|a valid argument|modus ponens|the contrapositive|begging the
question|an existential quantifier|soundness|Godel's incompleteness theorems|the Lowenheim-Skolem
theorem; prehistory|an archaeologist|hunting and gathering|cave paintings|the Neolithic
Revolution|domestication|megaliths|Homo erectus|the Natufian culture|the Younger Dryas|the Clovis
culture|the Denisovans
""")
"""subject|who asks|terms ordered common -> rare."""
_SUBJECTS = tuple((p[0], p[1], tuple(p[2:])) for p in (line.split("|") for line in SUBJECTS))
MCQ_STEMS = _records("""
which goes with {t0}?|T; which is an example of {t0}?|T; which relates most to {t0}?|T; which is
studied with {t0}?|T; what causes {t0}?|T; if {t0} increases, what happens to {t1}?|D; what best
explains {t0}?|T; what distinguishes {t0} from {t1}?|T; how does {t0} affect {t1}?|D; which is NOT
a feature of {t0}?|T; statement 1 | {t0} requires {t1}. Statement 2 | It implies {t2}.|F; holding
{t1} fixed, how does {t0} respond?|D; which finding would falsify {t0}?|T; which hold? I. {T0}
entails {t1}. II. It precludes {t2}.|R; when does {t0} fail to imply {t1}?|T; which is NOT implied
by {t0} given {t1}?|T; which hold? I. {T0} is a special case of {t1}. II. It is independent of
{t2}.|R; what makes {t0} and {t1} observationally equivalent?|T
""")
"""Question stems, easy -> hard (recall -> mechanism -> counterfactual and multi-claim), each
with its kind of options: T four terms, D a direction, F true/false pairs, R claim sets."""
MCQ_SETTINGS = ("In daily life", "In a simple example", "In a typical case", "Usually",
                "In general", "Under standard assumptions", "To first order",
                "In the limiting case", "Absent confounders", "Under minimal assumptions")
"""Framings of the question, ordered easy -> hard."""
MCQ_FIXED = {"D": ("Rises", "Falls", "No change", "It depends"),
             "F": ("True, True", "False, False", "True, False", "False, True"),
             "R": ("I only", "II only", "Both", "Neither")}
MCQ_FORMATS = ("A) {} B) {} C) {} D) {}", "A. {} B. {} C. {} D. {}", "A: {} B: {} C: {} D: {}")


def _mcq(rng: np.random.Generator, s: float) -> str:
    subject, _, terms = _pick(rng, _SUBJECTS)
    stem, kind = _graded(rng, s, MCQ_STEMS).rsplit("|", 1)
    t = _graded_distinct(rng, s, terms, 3)
    f = {"subject": subject, "T0": _cap(t[0])} | {f"t{i}": x for i, x in enumerate(t)}
    if kind == "T":
        used = stem.count("{t")
        opts = _graded_distinct(rng, s, [x for x in terms if x not in t[:used]], 4)
    else:
        opts = MCQ_FIXED[kind]
    options = _pick(rng, MCQ_FORMATS).format(*_sample(rng, opts, 4))
    stem = stem.format(**f)
    if rng.random() < 0.7:
        framed = f"{_graded(rng, s, MCQ_SETTINGS)}, {stem}"
        if len(framed) + len(options) < 185:  # keep within the token budget
            stem = framed
    elif rng.random() < 0.5:
        stem = f"In {subject}, {stem}"
    return _fit([_cap(stem), options], 200)


# --- math: word problems (GSM8K) up to competition problems (MATH) --------------------------

NAMES = ("Maya", "Liam", "Priya", "Jonah", "Sofia", "Kwame", "Elena", "Tariq", "Hannah", "Diego",
         "Mei", "Oscar", "Amara", "Felix", "Noor", "Ravi", "Greta", "Mateo", "Yuki", "Samir",
         "Chloe", "Ibrahim", "Lucia", "Theo", "Aisha", "Bruno", "Ingrid", "Kofi", "Rosa", "Dev")
SCENES = _records("""
cupcakes|tray|bake sale|3; apples|crate|farm stand|2; notebooks|pack|school store|4;
seedlings|flat|garden center|5; bracelets|bag|craft fair|6; candles|box|market stall|8;
comics|bundle|swap meet|3; jars of honey|case|farmers market|9; soap bars|carton|gift shop|5;
plants|tray|nursery|7; muffins|batch|cafe|3; stickers|sheet|fundraiser|1; eggs|carton|farm|1;
pencils|box|classroom|1; loaves|rack|bakery|4; t-shirts|stack|merch table|15; juice
bottles|crate|juice bar|3; puzzles|shelf|toy shop|12; paperbacks|box|bookstore|6;
cookies|tin|holiday market|2; pumpkins|wagon|pumpkin patch|5; scarves|bin|knitting club|11;
mugs|case|pottery studio|9; kites|rack|beach kiosk|10; bird feeders|box|hardware store|13;
tickets|roll|school play|7; bags of coffee|pallet|roastery|14; tulip bulbs|sack|flower show|2
""")
"""item|container|where|unit price."""
MATH_PROBLEMS = _records("""
{n} has {a} {item} and gets {b} more. How many {item} does {n} have now?; {n} buys {a} {item} at
${p} each. How much does {n} spend?; {n} packs {ab} {item} into {boxes} of {b}. How many {boxes}
does {n} fill?; {n} had {a} {item}, sold {b}, then bought {c} more. How many {item} are there now?;
At the {where}, {n} sells {frac} of {af} {item}. How many {item} are left?; Each {box} holds {b}
{item}. {n} fills {a} {boxes} and gives {f} {c} {item}. How many {item} remain?; {n} sells {a}
{item} on Monday and twice as many on Tuesday at ${p} each. What is the total revenue?; The price
of {item} rises {pct}% and then falls {pct2}%. What is the net percent change?; {n} and {f} share
{ab} {item} in the ratio {k}:{b}. How many {item} does {f} get?; {n} packs a {box} in {a} minutes
and {f} in {b} minutes. Working together, how long do {c} {boxes} take?; Solve for x: {a}x + {c} =
{b}x - {d}.; What is the least common multiple of {ak} and {bk}?; How many positive divisors does
{N} have?; What is the remainder when {b}^{e} is divided by {m}?; In how many ways can {k} of {kr}
different books be arranged on a shelf?; What is the sum of all integers from 1 to {N} divisible by
{a} or {b}?; {n} rolls {dn} fair dice. What is the probability that the sum is {dsum}?; How many
ordered pairs (x, y) of positive integers satisfy {a}x + {b}y = {N}?; Find the coefficient of x^{k}
in the expansion of (x + {a})^{kr}.; How many lattice paths from (0,0) to ({a},{b}) avoid the point
({k},{m})?; How many {k}-digit numbers have digit sum {ds} and no two equal adjacent digits?; For
how many integers n in [1, {N}] is n^2 + {a}n + {b} divisible by {m}?; How many subsets of {{1,
..., {q}}} contain no two consecutive integers and have a sum divisible by {m}?; How many
permutations of 1..{q} have exactly {k} fixed points and no 2-cycles?; Over positive reals with abc
= {N}, find the minimum of (a+b)(b+c)(c+a) and all equality cases.; In how many ways can a {k}x{q}
board be tiled by dominoes and L-trominoes, modulo {m}?
""")
"""Problems, easy -> hard (one-step arithmetic -> rates and ratios -> number theory ->
constrained counting); {n}/{f}: names, {item}/{box}: a scene, the rest drawn numbers."""
MATH_NOTES = ("Answer with a number.", "Show each step.", "Simplify your answer.",
              "Give an exact fraction.", "Justify each step.", "Explain why the count is complete.",
              "Prove that no case is missed.", "Give the answer modulo 1000.")
"""Ordered easy -> hard."""
MATH_HINTS = ("add the amounts.", "multiply first.", "draw a picture.", "work backwards.",
              "use a ratio table.", "set up an equation.", "factor first.",
              "think about remainders.", "use complementary counting.",
              "use inclusion-exclusion.", "find a recurrence.", "use generating functions.",
              "apply AM-GM.", "find a bijection.")
"""Ordered easy -> hard."""
MATH_LEADS = ("Problem:", "Solve:", "Question:", "Math:", "Word problem:", "Try this:")
FRACTIONS = (("half", 2), ("a third", 3), ("a quarter", 4), ("two thirds", 3), ("a fifth", 5),
             ("three quarters", 4), ("three eighths", 8), ("five ninths", 9))


def _math(rng: np.random.Generator, s: float) -> str:
    item, box, where, price = _pick(rng, SCENES).split("|")
    n, fr = _sample(rng, NAMES, 2)
    frac, den = _pick(rng, FRACTIONS)
    dn = _r(rng, 2, 4)
    a, b, c, k = _r(rng, 3, 40), _r(rng, 2, 12), _r(rng, 2, 30), _r(rng, 2, 6)
    f = {"n": n, "f": fr, "item": item, "box": box, "where": where, "frac": frac,
         "boxes": box + ("es" if box.endswith(("x", "ch", "sh", "s")) else "s"),
         "p": int(price) + _r(rng, 0, 3), "a": a, "b": b, "c": c, "k": k, "ab": a * b,
         "af": den * _r(rng, 2, 12), "d": _r(rng, 2, 20), "ak": a * _r(rng, 2, 6),
         "bk": b * _r(rng, 2, 9), "N": _r(rng, 60, 999), "e": _r(rng, 10, 99),
         "m": _r(rng, 3, 13), "kr": k + _r(rng, 2, 9), "pct": 5 * _r(rng, 1, 12),
         "pct2": 5 * _r(rng, 1, 12), "ds": _r(rng, 5, 20), "q": _r(rng, 7, 15),
         "dn": dn, "dsum": dn + _r(rng, 1, 5 * dn - 2)}
    problem = _graded(rng, s, MATH_PROBLEMS).format(**f)
    hint = _graded(rng, s, MATH_HINTS)
    hint = _pick(rng, (f"Hint: {hint}", f"Tip: {hint}", f"Idea: {hint}"))
    note = _graded(rng, s, MATH_NOTES) if rng.random() < 0.8 else ""
    lead = _pick(rng, MATH_LEADS) if rng.random() < 0.25 else ""
    return _fit([lead, problem, hint, note], 210, drop=(lead, note))


_RENDER = {"code": _code, "sql": _sql, "mcq": _mcq, "math": _math}
PAD = {"code": " Return the result.", "sql": " Return one SQL query.",
       "mcq": " Answer with a single letter.", "math": " Give the final answer."}


def render(domain: str, rng: np.random.Generator, difficulty: float) -> str:
    """One input text of `domain` for a request of latent difficulty `difficulty` in [0, 1]."""
    fn = _RENDER.get(domain)
    if fn is None:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    s = rng.random() if rng.random() < MISLABEL else min(1.0, max(0.0, float(difficulty)))
    text = fn(rng, float(s))
    return text if len(text) >= 40 else text + PAD[domain]


class _LevelsKept:
    """Passes a Generator's draws through and keeps the feature levels drawn with them."""

    def __init__(self, rng: np.random.Generator):
        self._rng, self.levels = rng, []

    def random(self) -> float:
        return self._rng.random()

    def normal(self) -> float:
        return self._rng.normal()


def render_with_levels(
    domain: str, rng: np.random.Generator, difficulty: float
) -> tuple[str, list[float]]:
    """`render`'s text, and the raw levels (before clipping) its features were drawn at.

    The text depends on the difficulty only through these levels (every feature is drawn
    through `_level`; the rest of the text is drawn whatever the difficulty), so no reader of
    the text can learn more of the difficulty than they hold: benchmarks/routing_ceiling.py
    --levels bounds every text router with them."""
    kept = _LevelsKept(rng)
    return render(domain, kept, difficulty), kept.levels
