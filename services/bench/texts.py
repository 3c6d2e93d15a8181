"""Benchmark input texts whose surface carries real but noisy signal of their difficulty.

`render(domain, rng, d)` writes one request of a domain for a latent difficulty `d` in [0, 1]:
a programming task (code), a question over a described database (sql), a four-option question
(mcq) or a multi-step problem (math). The text never states `d`; like a real prompt it shows it
through its surface: how many tables, constraints, clauses or steps it has, how rare its
vocabulary is, how nested its conditions are, how long it is.

The noise: with probability MISLABEL the whole surface is drawn for an unrelated difficulty (a
request that looks harder or easier than it is); otherwise each feature is drawn around its own
level `d + N(0, sd)`, clipped to [0, 1], independently of the other features, so they disagree
and none is exact; topics, entities, numbers and templates are drawn whatever the difficulty.

Deterministic: all randomness comes from `rng` (its scalar `random()` and `normal()` only).
"""

from __future__ import annotations

import functools

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


def _lv(rng: np.random.Generator, s: float, sd: float = FEATURE_SD) -> float:
    """A feature's level: the surface difficulty plus this feature's own noise."""
    return min(1.0, max(0.0, s + sd * rng.normal()))


def _n(rng: np.random.Generator, s: float, lo: int, hi: int, sd: float = FEATURE_SD) -> int:
    """A count in [lo, hi] around the level s."""
    return lo + min(hi - lo, int(_lv(rng, s, sd) * (hi - lo + 1)))


def _at(rng: np.random.Generator, s: float, n: int, sd: float) -> int:
    """An index into n ordered items near the position s sets (reflected at the ends, so the
    first and last items are not over-drawn)."""
    x = abs(s + sd * rng.normal())
    return min(n - 1, int((2.0 - x if x > 1.0 else x) * n))


def _graded(rng: np.random.Generator, s: float, seq, sd: float = FEATURE_SD):
    """An item of `seq` (ordered common -> rare, easy -> hard) near the position s sets."""
    return seq[_at(rng, s, len(seq), sd)]


def _graded_distinct(rng: np.random.Generator, s: float, seq, k: int, sd: float = FEATURE_SD) -> list:
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


def _fit(parts: list[str], keep: int = 1, limit: int = 600) -> str:
    """Join the parts; drop optional ones (after the first `keep`, before the last) to fit."""
    parts = [p for p in parts if p]
    while len(" ".join(parts)) > limit and len(parts) > keep + 1:
        parts.pop(-2)
    return " ".join(parts)[:limit]


# --- code: one-paragraph programming tasks (HumanEval / MBPP-like) --------------------------

CODE_TASKS = _records("""
count_vowels(text)|counts the vowels in a string; sum_of_evens(nums)|returns the sum of the even
numbers in a list of integers; reverse_words(sentence)|reverses the order of the words in a
sentence; is_palindrome(text)|checks whether a string reads the same forwards and backwards;
to_fahrenheit(temps)|converts a list of Celsius temperatures to Fahrenheit;
word_counts(text)|returns a dict mapping each word of a text to its number of occurrences;
second_largest(nums)|returns the second largest distinct value of a list; dedupe(items)|removes
duplicates from a list, keeping the first occurrence of each; title_case(titles)|capitalizes the
first letter of every word in each title; max_adjacent_gap(nums)|returns the largest difference
between two adjacent elements; chunk(items, size)|splits a list into consecutive chunks of the
given size; run_length_encode(text)|compresses a string with run-length encoding;
balanced(expr)|checks whether the brackets (), [] and {} of an expression are balanced;
roman_to_int(numeral)|converts a Roman numeral to an integer; flatten(nested)|flattens an
arbitrarily nested list of integers; group_anagrams(words)|groups words that are anagrams of one
another; top_k_frequent(items, k)|returns the k most frequent items of a list;
merge_intervals(intervals)|merges overlapping closed intervals given as (start, end) pairs;
rotate_matrix(matrix)|rotates a square matrix 90 degrees clockwise in place;
spiral_order(grid)|returns the elements of a rectangular grid in spiral order;
parse_duration(text)|parses durations such as '1h30m15s' into a number of seconds;
longest_unique_run(text)|returns the length of the longest substring without repeated characters;
count_islands(grid)|counts the 4-connected groups of '1' cells in a grid of '0' and '1';
min_meeting_rooms(meetings)|returns the minimum number of rooms a list of meetings needs;
edit_distance(a, b)|computes the Levenshtein distance between two strings;
longest_increasing_subsequence(nums)|returns one longest strictly increasing subsequence;
topological_order(deps)|orders tasks so every task follows its dependencies, or returns None on a
cycle; shortest_path(graph, src, dst)|finds the cheapest path in a weighted directed graph with
Dijkstra's algorithm; LRUCache(capacity)|implements a least-recently-used cache with get and put;
evaluate(expr)|evaluates an arithmetic expression with +, -, *, /, unary minus and parentheses;
wildcard_match(text, pattern)|matches a text against a glob pattern with '?' and '*'; min_window(s,
t)|returns the shortest substring of s containing every character of t with multiplicity;
max_weight_schedule(jobs)|selects non-overlapping weighted jobs with the largest total weight;
RunningMedian()|maintains the median of a stream of numbers with two heaps;
merge_accounts(accounts)|merges accounts that share an email address using union-find;
regex_match(text, pattern)|implements regular-expression matching with '.' and '*' over the whole
text; SlidingWindowLimiter(limit, window)|implements a sliding-window rate limiter keyed by client
id; serialize_tree(root)|serializes a binary tree to a string and back without losing structure;
max_flow(capacity, s, t)|computes the maximum flow of a network with the Edmonds-Karp algorithm;
IntervalTree()|supports inserting intervals and querying every interval that overlaps a point
""")
"""`signature|what it does`, easy -> hard."""
CODE_CONTEXTS = _records("""
an inventory service; a logistics dashboard; a genomics pipeline; a chat app; a billing system; a
school timetable tool; a weather station logger; a game server; a library catalog; a fitness
tracker; a CI build tool; a recipe website; a warehouse robot controller; a trading backtester; a
hospital scheduler; a music playlist app; a log analyzer; a compiler course; a survey tool; a
travel booking site; an IoT gateway; a spreadsheet plugin; a text editor; a ride-sharing backend; a
museum kiosk; a payroll script; a sensor network; a farm management app; an email client; a code
review bot; a parking garage system; a news aggregator; a robotics lab
""")
CODE_CONSTRAINTS = _records("""
Return an empty result for empty input.; Do not use any imports.; Do not modify the input.; Ignore
letter case.; Include a short docstring.; Skip None entries.; Add type hints.; Raise ValueError on
invalid input.; Keep the original order of equal elements.; Break ties by lexicographic order.; It
must run in O(n) time.; Include doctest examples.; It must run in O(n log n) time and O(1) extra
space.; Avoid recursion so inputs of 10^6 elements do not overflow the stack.; Handle Unicode
input, including combining characters.; Use integer or fractions.Fraction arithmetic to avoid
floating-point error.; Make it a generator that yields results lazily.; Every operation must be
amortized O(1).; It must be thread-safe under concurrent callers.; The result must not depend on
hash randomization.; Memory must stay bounded for streaming input of unknown length.
""")
"""Ordered common -> demanding."""
CODE_EDGES = _records("""
an empty input; a single element; negative numbers; duplicate values; whitespace-only strings; very
large integers; zero-length ranges; NaN values; mixed int and float values; self-loops and cycles;
overlapping ranges; deeply nested structures; surrogate pairs
""")
CODE_NEUTRAL = _records("""
Keep it simple.; Return the result instead of printing it.; Use clear names.; Assume the input fits
in memory.; Only the function body will be reviewed.; Standard library only.; Follow PEP 8.; The
tests call it directly.; Avoid global state.; Prefer readability over cleverness.
""")
CODE_HEADS = ("Write a Python {kind} `{sig}` that {desc}.", "Implement `{sig}`, which {desc}.",
              "Complete the {kind} `{sig}`: it {desc}.", "For {ctx}, write `{sig}` that {desc}.",
              "Given the stub for `{sig}`, implement it so that it {desc}.",
              "In {ctx}, we need a {kind} `{sig}` that {desc}.",
              "Write `{sig}` in Python; it {desc}.")
CODE_EXTRAS = ("Explain the complexity in a comment.", "Write a few assert-based tests too.",
               "The grader uses hidden tests with adversarial inputs.",
               "Justify the loop invariant in a comment.")


def _code(rng: np.random.Generator, s: float) -> str:
    sig, desc = _graded(rng, s, CODE_TASKS, 0.25).split("|")
    kind = "class" if sig[0].isupper() else "function"
    head, ctx = _pick(rng, CODE_HEADS), _pick(rng, CODE_CONTEXTS)
    parts = [head.format(kind=kind, sig=sig, desc=desc, ctx=ctx)]
    if "{ctx}" not in head and rng.random() < 0.35:
        parts.insert(0, f"This is for {ctx}.")
    if rng.random() < 0.4:
        parts.append(_pick(rng, CODE_NEUTRAL))
    n_edge = _n(rng, s, 0, 4, 0.25)
    if n_edge:
        edges = _sample(rng, CODE_EDGES[: 4 + int(_lv(rng, s) * 9)], n_edge)
        parts.append(_pick(rng, ("Handle {} correctly.", "Make sure it handles {}.",
                                 "Edge cases include {}.")).format(_and(edges)))
    cons = sorted({_graded(rng, s, CODE_CONSTRAINTS, 0.3) for _ in range(_n(rng, s, 0, 5, 0.25))})
    if cons and rng.random() < 0.4:
        parts.append("Requirements: " + " ".join(cons))
    else:
        parts.extend(cons)
    if rng.random() < 0.5 * _lv(rng, s, 0.3):
        parts.append(_pick(rng, CODE_EXTRAS))
    return _fit(parts)


# --- sql: questions over a small described database (Spider / BIRD-like) --------------------

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
SQL_INTROS = ("Using tables {}:", "Given the tables {}:", "Database schema: {}.", "Tables: {}.",
              "Schema: {}. Question:", "With the following tables {}, answer:", "We have {}.")
MONTHS = ("January", "March", "April", "June", "July", "September", "October", "December")


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
        tables.append({"name": name, "one": _singular(name), "label": label, "cat": cat,
                       "values": values.split("|"), "num": num, "date": date,
                       "words": name.replace("_", " "), "word": _singular(name).replace("_", " ")})
    for parent, child in zip(tables, tables[1:], strict=False):
        child["fk"] = parent["one"] + "_id"
    return tables


_SCHEMAS = tuple(_parse_schema(line) for line in SCHEMAS)


def _table_def(t: dict) -> str:
    cols = ["id"] + ([t["fk"]] if "fk" in t else []) + [t["label"], t["cat"], t["num"], t["date"]]
    return f"{t['name']}({', '.join(cols)})"


def _sql_filter(rng: np.random.Generator, t: dict, s: float) -> str:
    r, who = rng.random(), f"the {t['word']}"
    if r < 0.35:
        return f"{who} {t['cat']} is '{_pick(rng, t['values'])}'"
    if r < 0.7:
        n = int(10 ** (1 + 3 * rng.random()))
        if rng.random() < 0.5 * s:
            return f"{who} {t['num']} is between {n} and {n * _r(rng, 2, 5)}"
        return f"{who} {t['num']} is {_pick(rng, ('above', 'below', 'at least', 'over'))} {n}"
    year = _r(rng, 2015, 2024)
    if rng.random() < 0.5:
        return f"{who} {t['date']} falls in {year}"
    return f"{who} {t['date']} is after {_pick(rng, MONTHS)} {year}"


def _sql(rng: np.random.Generator, s: float) -> str:
    schema = _pick(rng, _SCHEMAS)
    k = _n(rng, s, 1, 4, 0.2)  # tables the question touches
    start = int(rng.random() * (5 - k))
    ts = schema[start:start + k]
    p, c = ts[0], ts[-1]
    shown = list(ts)
    if rng.random() < 0.3 and k < 4:  # an unused table, as real schemas have
        shown.append(schema[start + k] if start + k < 4 else schema[start - 1])
    if rng.random() < 0.3:
        shown = _sample(rng, shown, len(shown))
    filters = {}  # one condition per column
    for _ in range(_n(rng, s, 0, 3, 0.25)):
        f = _sql_filter(rng, _pick(rng, ts), s)
        filters.setdefault(" ".join(f.split()[:3]), f)
    filters = list(filters.values())
    where = ""
    if len(filters) > 2 and rng.random() < 0.6:
        where = f" where {filters[0]} and either {filters[1]} or {filters[2]}"
    elif filters:
        where = " where " + " and ".join(filters)
    pn, cn, pl, pc, pv, cv = p["words"], c["words"], p["label"], p["cat"], p["num"], c["num"]
    if k == 1:
        head = _pick(rng, (f"List the {pl} of all {pn}{where}.", f"How many {pn} are there{where}?",
                           f"Show the {pl} and {pv} of {pn}{where}, sorted by {pv} descending.",
                           f"What is the average {pv} of {pn}{where}?",
                           f"Which {pn} have the highest {pv}{where}?"))
    else:
        via = f" (joining through {_and([t['name'] for t in ts[1:-1]])})" if k > 2 else ""
        head = _pick(rng, (f"For each {p['word']}, report its {pl} and the total {cv} of its {cn}"
                           f"{via}{where}.",
                           f"Which {pn} have more than {_r(rng, 1, 9)} {cn}{via}{where}?",
                           f"Find the average {cv} of {cn} per {pc} of their {p['word']}"
                           f"{via}{where}.",
                           f"List the {pl} of {pn} that have no {cn}{where}{via}.",
                           f"Count the {cn} for each {p['word']} {pl}{via}{where}."))
    extras = (  # easier -> harder
        f"Ignore {cn} whose {cv} is missing.", f"Group the results by {pc}.",
        f"Return the top {_r(rng, 3, 10)}, ordered by {cv} descending and breaking ties by {pl}.",
        f"Exclude {pn} whose {pv} is below the average {pv} of their {pc}.",
        f"Also give each row its rank within its {pc} using a window function.",
        f"Show each {pc}'s share of the overall total as a percentage rounded to two decimals.",
        f"Treat missing {cv} values as zero and count each {c['word']} only once.",
        f"Compare each year's total {cv} with the previous year's (a year-over-year change).",
        f"Hint: a 'recent' {c['word']} means {c['date']} within the last 90 days of the data.",
    )
    lo = int(_lv(rng, s, 0.3) * 4)  # harder surfaces draw from the harder end
    picked = _sample(rng, extras[lo:lo + 5], _n(rng, s, 0, 4, 0.25))
    tables = _and([_table_def(t) for t in shown])
    if rng.random() < 0.4:  # question first, schema after
        return _fit([head] + picked + [_pick(rng, ("Tables: {}.", "Schema: {}."))
                                       .format(tables)], keep=1)
    return _fit([_pick(rng, SQL_INTROS).format(tables), head] + picked, keep=2)


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
MCQ_LEVELS = ("elementary", "high school", "high school", "college", "college", "professional")
MCQ_RELATIONS = ("requires", "is a special case of", "cannot occur without", "is unaffected by",
                 "tends to reduce", "is best explained by", "is logically independent of")
MCQ_CONDITIONS = ("Assume {} is held constant.", "Ignore any effect of {}.",
                  "Suppose {} has already been ruled out.", "Consider the case where {} is absent.")
MCQ_FORMATS = ("A) {} B) {} C) {} D) {}", "(A) {} (B) {} (C) {} (D) {}",
               "A. {}; B. {}; C. {}; D. {}", "Options: A) {}, B) {}, C) {}, D) {}")
ROMAN = ("I only", "II only", "I and II only", "II and III only", "I and III only",
         "I, II and III", "None of them")


def _mcq(rng: np.random.Generator, s: float) -> str:
    subject, actor, terms = _pick(rng, _SUBJECTS)
    t = _graded_distinct(rng, s, terms, 6, 0.25)
    style = _lv(rng, s, 0.25)
    neg = rng.random() < 0.35 * _lv(rng, s, 0.3)
    is_, most = ("is NOT", "is NOT") if neg else ("is", "is most")
    if style < 0.3:
        stem = _pick(rng, (f"Which of the following {most} closely associated with {t[0]}?",
                           f"Which of the following {is_} a topic studied in {subject}?",
                           f"{_cap(actor)} is explaining {t[0]} to a class. Which of the following "
                           f"{most} relevant?",
                           f"In {subject}, which of the following {most} often discussed together "
                           f"with {t[0]}?"))
        opts = _graded_distinct(rng, s, [x for x in terms if x != t[0]], 4, 0.3)
    elif style < 0.65:
        stem = _pick(rng, (f"{_cap(actor)} observes {t[0]} alongside {t[1]}. Which of the "
                           "following best explains the observation?",
                           f"Which of the following best distinguishes {t[0]} from {t[1]}?",
                           f"According to the standard account of {t[0]}, which of the following "
                           f"would be expected if {t[1]} changed?",
                           f"Which of the following {is_} a consequence of {t[0]} in the presence "
                           f"of {t[1]}?"))
        opts = _graded_distinct(rng, s, [x for x in terms if x not in t[:2]], 4, 0.3)
    elif style < 0.82:
        stem = (f"Statement 1 | {_cap(t[0])} {_pick(rng, MCQ_RELATIONS)} {t[1]}. "
                f"Statement 2 | {_cap(t[2])} {_pick(rng, MCQ_RELATIONS)} {t[3]}.")
        opts = _sample(rng, ("True, True", "False, False", "True, False", "False, True"), 4)
    else:
        claims = " ".join(f"{'I' * (i + 1)}. {_cap(t[i])} {_pick(rng, MCQ_RELATIONS)} {t[i + 3]}."
                          for i in range(_n(rng, s, 2, 3, 0.3)))
        stem = (f"{_cap(actor)} considers the following claims about {t[5]}. {claims} "
                f"Which of the claims {'are NOT' if neg else 'are'} correct?")
        opts = _sample(rng, ROMAN, 4)
    n_cond = _n(rng, s, 0, 3, 0.3) if style >= 0.3 else 0
    conds = [_pick(rng, MCQ_CONDITIONS).format(x)
             for x in _sample(rng, [x for x in terms[4:] if x not in t and x not in opts], n_cond)]
    parts = []
    if rng.random() < 0.45:
        level = _graded(rng, s, MCQ_LEVELS, 0.3)
        parts.append(f"The following is a multiple choice question about {level} {subject}.")
    opts = _sample(rng, opts, 4)
    parts += conds[:1] + [stem] + conds[1:] + [_pick(rng, MCQ_FORMATS).format(*opts)]
    return _fit(parts, keep=0)


# --- math: multi-step word problems (GSM8K) and chained competition problems (MATH) ---------

NAMES = ("Maya", "Liam", "Priya", "Jonah", "Sofia", "Kwame", "Elena", "Tariq", "Hannah", "Diego",
         "Mei", "Oscar", "Amara", "Felix", "Noor", "Ravi", "Greta", "Mateo", "Yuki", "Samir",
         "Chloe", "Ibrahim", "Lucia", "Theo", "Aisha", "Bruno", "Ingrid", "Kofi", "Rosa", "Dev")
SCENES = _records("""
cupcakes|tray|bake sale|3; apples|crate|farm stand|2; notebooks|pack|school store|4; tomato
seedlings|flat|garden center|5; bracelets|bag|craft fair|6; candles|box|market stall|8; comic
books|bundle|swap meet|3; jars of honey|case|farmers market|9; soap bars|carton|gift shop|5;
plants|tray|nursery|7; muffins|batch|cafe|3; stickers|sheet|club fundraiser|1; eggs|carton|farm|1;
pencils|box|classroom|1; loaves of bread|rack|bakery|4; t-shirts|stack|band merch table|15; bottles
of juice|crate|juice bar|3; puzzles|shelf|toy shop|12; paperbacks|box|used bookstore|6;
cookies|tin|holiday market|2; pumpkins|wagon|patch|5; scarves|bin|knitting circle|11;
mugs|case|pottery studio|9; kites|rack|beach kiosk|10; fish|tank|aquarium shop|4; bird
feeders|box|hardware store|13; tickets|roll|school play|7; bags of coffee|pallet|roastery|14;
jigsaw pieces|tub|community center|1; tulip bulbs|sack|flower show|2
""")
"""item|container|where|unit price."""
FRACTIONS = ("half", "a third", "a quarter", "a fifth", "two thirds", "three eighths",
             "five ninths", "seven twelfths")
MATH_EXTRAS = ("Show that your answer is unique.", "Give your answer in lowest terms.",
               "Explain each step of your reasoning.", "Justify every step.")
MATH_LEADS = ("Solve the following problem.", "Problem:", "Competition problem:",
              "Work through this carefully.")
MATH_ASKS = ("How many {item} does {n} have left?", "How many {item} are left after all of this?",
             "What is the total number of {item} {n} handled?",
             "If {n} wants to end with exactly twice as many {item} as at the start, how many more "
             "must {n} get?")


def _word_problem(rng: np.random.Generator, s: float) -> str:
    item, box, where, price = _pick(rng, SCENES).split("|")
    boxes = box + ("es" if box.endswith(("x", "ch", "sh", "s")) else "s")
    name, friend = _sample(rng, NAMES, 2)
    size = _lv(rng, s, 0.25)  # magnitude of the numbers
    a = 12 * _r(rng, 1, 2 + int(25 * size ** 2)) if size > 0.3 else _r(rng, 4, 33)
    per = _r(rng, 2, 7 + int(20 * size))
    p = int(price) + (_r(rng, 0, 3) if size > 0.5 else 0)
    pr = f"${p}.{_pick(rng, ('25', '50', '75', '40'))}" if rng.random() < size else f"${p}"
    r = functools.partial(_r, rng)

    steps = [_pick(rng, (f"{name} sets up at the {where} with {a} {item}.",
                         f"{name} brings {a} {item} to the {where}.",
                         f"At the {where}, {name} starts the day with {a} {item}."))]
    pool = [  # in story order
        f"{friend} gives {name} {r(2, 16)} more {item}.",
        f"{name} then buys {r(2, 6)} {boxes} of {item}, with {per} in each {box}.",
        f"{name} keeps {r(2, 7)} {item} aside for {friend}.",
        f"{name} sells {_graded(rng, s, FRACTIONS)} of them in the morning.",
        f"By noon {name} has sold {5 * r(1, 19)}% of the remaining {item} at {pr} each.",
        f"The price drops by {_graded(rng, s, FRACTIONS)} for the last {box} sold.",
        f"A {5 * r(1, 5)}% sales tax is added to every sale after the first {r(3, 12)} {item}.",
        f"Over the next {r(2, 7)} days, {name} uses {r(1, 9)} {item} per day.",
        f"{friend} then brings back twice as many {item} as {name} set aside.",
        f"The rest are split equally into {r(2, 8)} {boxes}, with any leftover set aside.",
        f"{name} pays a ${r(5, 44)} fee for the stall and {r(1, 5)} dollars per hour for {r(3, 8)} "
        "hours of help.",
    ]
    steps += sorted(_sample(rng, pool, _n(rng, s, 1, 7, 0.2)), key=pool.index)
    if any("$" in x for x in steps) and rng.random() < 0.6:
        ask = _pick(rng, (f"How much money, in dollars, does {name} take in?",
                          f"What is {name}'s profit for the day, in dollars?"))
        if rng.random() < 0.5 * _lv(rng, s, 0.3):
            ask += " Round to the nearest cent."
    else:
        ask = _pick(rng, MATH_ASKS).format(item=item, n=name)
        if rng.random() < 0.5 * _lv(rng, s, 0.3):
            ask += _pick(rng, (" Give your answer as a whole number.",
                               " Express the answer as a percentage of the original amount."))
    return _fit(steps + [ask], keep=1)


def _competition(rng: np.random.Generator, s: float) -> str:
    """A MATH-like problem chained through named quantities, each step using the previous."""
    r = functools.partial(_r, rng)
    a, b, c, m = r(2, 9), r(2, 12), r(3, 30), r(5, 13)
    starts = (  # easy -> hard
        f"the least common multiple of {a * r(2, 6)} and {b * r(2, 9)}",
        f"the sum of the first {r(5, 40)} positive odd integers",
        f"the solution of {a}x + {c} = {a + b}x - {b * r(1, 9) - c}",
        f"the number of positive divisors of {a * b * c}",
        f"the area of a triangle with sides {3 * a}, {4 * a} and {5 * a}",
        f"the number of ways to choose {r(2, 4)} books from a shelf of {r(6, 14)}",
        f"the number of trailing zeros of {r(30, 300)}!",
        f"the coefficient of x^{r(2, 4)} in the expansion of (x + {a})^{r(5, 8)}",
        f"the number of integer pairs (x, y) with |x| + |y| <= {r(3, 12)}",
        f"the number of lattice points on the circle x^2 + y^2 = "
        f"{_pick(rng, (25, 65, 85, 125, 325))}",
    )
    nexts = (  # {v}: the previous quantity
        f"the remainder when {{v}} is divided by {m}",
        f"the units digit of {a}^{{v}}",
        f"the number of positive integers at most {{v}} that are divisible by {a} or {b}",
        f"the {{v}}-th term of the arithmetic sequence {c}, {c + a}, {c + 2 * a}, ...",
        "the sum of the digits of {v}^2",
        f"the remainder when {b}^{{v}} is divided by {m}",
        f"the largest prime factor of {{v}} + {c}",
        f"the number of ordered pairs (x, y) of positive integers with x + {a}y = {{v}}",
        f"the number of subsets of a {{v}}-element set of even size, modulo {7 * m}",
        f"f(f({{v}})), where f(x) = x/2 if x is even and {a}x + {b} otherwise",
    )
    first = _graded(rng, s, starts, 0.25)
    n_steps = _n(rng, s, 1, 4, 0.25)
    if n_steps == 1:
        verb = _pick(rng, ("Find", "Compute", "What is"))
        parts = [f"{verb} {first}{'?' if verb == 'What is' else '.'}"]
    else:
        names = _sample(rng, "NMKPQRT", n_steps)
        parts = [f"Let {names[0]} be {first}."]
        for i, step in enumerate(_graded_distinct(rng, s, nexts, n_steps - 1, 0.3), start=1):
            parts.append(f"Let {names[i]} be {step.format(v=names[i - 1])}.")
        parts.append(f"Compute {names[0]} + {names[-1]}." if rng.random() < 0.3 else
                     _pick(rng, (f"Find {names[-1]}.", f"What is {names[-1]}?")))
    if rng.random() < 0.5 * _lv(rng, s, 0.3):
        parts.append(_pick(rng, MATH_EXTRAS))
    if rng.random() < 0.4:
        parts.insert(0, _pick(rng, MATH_LEADS))
    return _fit(parts)


def _math(rng: np.random.Generator, s: float) -> str:
    if rng.random() < 0.1 + 0.5 * _lv(rng, s, 0.3):
        return _competition(rng, s)
    return _word_problem(rng, s)


_RENDER = {"code": _code, "sql": _sql, "mcq": _mcq, "math": _math}
PAD = {"code": " Keep the solution self-contained.", "sql": " Return one SQL query.",
       "mcq": " Answer with a single letter.", "math": " Give the final answer as a number."}


def render(domain: str, rng: np.random.Generator, difficulty: float) -> str:
    """One input text of `domain` for a request of latent difficulty `difficulty` in [0, 1]."""
    fn = _RENDER.get(domain)
    if fn is None:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    s = rng.random() if rng.random() < MISLABEL else min(1.0, max(0.0, float(difficulty)))
    text = fn(rng, float(s))
    return text if len(text) >= 60 else text + PAD[domain]
