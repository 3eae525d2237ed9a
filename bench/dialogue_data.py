"""The dialogue benchmark's data, authored here and written to bench/data/dialogue.json.

Two friends, Mara and Jonas, talk in 28 dated sessions (about 1,000 messages): facts said once among
everyday small talk on the same topics, some changed later, and 150 questions of five kinds, each with
the client ids of the messages that answer it:

    single      a fact asked in other words (no content word shared with its evidence: checked below)
    temporal    when something was said (the session's date answers it)
    multi_hop   two facts from different sessions
    updated     a fact that changed: the later message is the evidence
    adversarial nothing in the history answers it

Nothing is downloaded: the texts are written here, the small talk drawn from templates with a fixed
seed. `python -m bench.dialogue_data` rewrites the JSON (it is committed; the benchmark reads it).
"""

from __future__ import annotations

import json
import random
import re
from datetime import date, timedelta
from pathlib import Path

PATH = Path(__file__).resolve().parent / "data" / "dialogue.json"
SESSIONS = 28
MESSAGES_PER_SESSION = 36
FIRST_DAY = date(2025, 1, 11)
PEOPLE = {"M": ("user", "Mara"), "J": ("assistant", "Jonas")}

# An answer is what a context must say to answer a question: a list of entries, each a word or phrase
# of the evidence message(s), or a list of such alternatives any one of which will do (where a summary
# could naturally keep one and not the other). Every alternative occurs in an evidence message (checked
# when the data is written, by `mentions`, the same test the benchmark applies to a summary's text).
# A temporal question's answer words name the event; the session's date answers it.

# (key, session, speaker, evidence, paraphrased question, its answer, temporal question, its answer)
FACTS = [
    (
        "pet",
        0,
        "M",
        "I finally adopted a beagle puppy from the shelter on Elm Road, we named him Biscuit.",
        "What kind of dog joined her household?",
        ["beagle"],
        "When did Mara get her new pet?",
        [["beagle", "Biscuit", "puppy"]],
    ),
    (
        "sister",
        0,
        "J",
        "My sister Ingrid just moved to Trondheim for her PhD.",
        "Which Norwegian town is his sibling living in?",
        ["Trondheim"],
        "When did Jonas say his sibling relocated?",
        [["Trondheim", "Ingrid"]],
    ),
    (
        "job",
        1,
        "M",
        "I started a new job as a pharmacist at the hospital downtown.",
        "What is her profession?",
        ["pharmacist"],
        "When did Mara begin her current position?",
        [["pharmacist", "hospital"]],
    ),
    (
        "cello",
        1,
        "J",
        "I've been learning the cello every Tuesday evening.",
        "Which string instrument is he practising?",
        ["cello"],
        "When did Jonas mention his music lessons?",
        ["cello"],
    ),
    (
        "nan",
        2,
        "M",
        "My grandmother turns ninety on the 14th of May.",
        "How old will her nan be at the next birthday?",
        ["ninety"],
        "When did Mara talk about her nan's upcoming celebration?",
        [["ninety", "grandmother"]],
    ),
    (
        "allergy",
        2,
        "J",
        "I'm allergic to shellfish, so no prawns for me.",
        "Which seafood must he avoid eating?",
        [["shellfish", "prawns"]],
        "When did Jonas bring up his food intolerance?",
        [["shellfish", "prawns", "allergic"]],
    ),
    (
        "holiday",
        3,
        "M",
        "We booked a cottage on the Isle of Skye for the last week of August.",
        "Where are they vacationing in late summer?",
        ["Skye"],
        "When did Mara say the holiday reservation was made?",
        [["Skye", "cottage"]],
    ),
    (
        "car",
        3,
        "J",
        "My car is a green 2012 Skoda Octavia.",
        "What vehicle does he drive?",
        [["Skoda", "Octavia"]],
        "When did Jonas describe his vehicle?",
        [["Skoda", "Octavia"]],
    ),
    (
        "race",
        4,
        "M",
        "I ran the Edinburgh half marathon in one hour fifty-two.",
        "What was her finishing time in the running event?",
        ["fifty-two"],
        "When did Mara report her race result?",
        [["marathon", "fifty-two"]],
    ),
    (
        "diet",
        4,
        "J",
        "I switched to a vegetarian diet after watching that documentary.",
        "Does he still eat meat?",
        ["vegetarian"],
        "When did Jonas change what he eats?",
        ["vegetarian"],
    ),
    (
        "author",
        5,
        "M",
        "My favourite author is Ursula Le Guin, I reread Earthsea every winter.",
        "Which novelist does she love most?",
        [["Le Guin", "Ursula"]],
        "When did Mara name the novelist she loves most?",
        [["Le Guin", "Ursula", "Earthsea"]],
    ),
    (
        "kitchen",
        5,
        "J",
        "We painted the kitchen a pale sage colour over the weekend.",
        "What hue did he choose for the walls where he cooks?",
        ["sage"],
        "When did Jonas redecorate?",
        [["sage", "kitchen"]],
    ),
    (
        "wedding",
        6,
        "M",
        "My brother Tomas is getting married in Porto next spring.",
        "Where is her sibling's ceremony taking place?",
        ["Porto"],
        "When did Mara announce the engagement news?",
        [["married", "Porto", "Tomas"]],
    ),
    (
        "wrist",
        6,
        "J",
        "I broke my left wrist falling off my bike.",
        "Which arm injury did he suffer?",
        ["wrist"],
        "When did Jonas get hurt?",
        ["wrist"],
    ),
    (
        "language",
        7,
        "M",
        "I'm taking Spanish classes at the community college.",
        "Which foreign tongue is she studying?",
        ["Spanish"],
        "When did Mara start her language course?",
        ["Spanish"],
    ),
    (
        "wifi",
        7,
        "J",
        "Our wifi password is blue-heron-77, write it down.",
        "What's the network passphrase at his place?",
        ["blue-heron-77"],
        "When did Jonas share the network passphrase?",
        [["blue-heron-77", "wifi", "password"]],
    ),
    (
        "tooth",
        8,
        "M",
        "My daughter Elsie lost her first tooth yesterday.",
        "What happened in her kid's mouth recently?",
        ["tooth"],
        "When did Mara's child reach that milestone?",
        ["tooth"],
    ),
    (
        "book",
        8,
        "J",
        "I'm reading a biography of Ada Lovelace.",
        "Whose life story is on his nightstand?",
        ["Lovelace"],
        "When did Jonas mention the biography?",
        ["Lovelace"],
    ),
    (
        "boiler",
        9,
        "M",
        "The boiler broke again and the plumber comes on Friday.",
        "What household appliance needs repair?",
        ["boiler"],
        "When did Mara's heating fail?",
        ["boiler"],
    ),
    (
        "promotion",
        9,
        "J",
        "I got promoted to team lead at the studio.",
        "What new role did he receive at work?",
        ["team lead"],
        "When did Jonas move up in his career?",
        [["team lead", "promoted"]],
    ),
    (
        "trees",
        10,
        "M",
        "I planted three apple trees behind the shed.",
        "What fruit is she growing in her garden?",
        ["apple"],
        "When did Mara plant the orchard?",
        ["apple"],
    ),
    (
        "dad",
        10,
        "J",
        "My dad had a knee operation and is recovering well.",
        "Which of his parents had surgery?",
        ["dad"],
        "When did Jonas say his father had the surgery?",
        [["knee", "operation", "dad"]],
    ),
    (
        "dish",
        11,
        "M",
        "My favourite dish is my mum's lamb tagine.",
        "What meal does she like best?",
        ["tagine"],
        "When did Mara reveal the meal she likes best?",
        ["tagine"],
    ),
    (
        "triathlon",
        11,
        "J",
        "I'm training for a triathlon in Bergen in September.",
        "What multisport competition is he preparing for?",
        ["triathlon"],
        "When did Jonas start preparing for the competition?",
        ["triathlon"],
    ),
    (
        "solar",
        12,
        "M",
        "We're thinking of getting solar panels on the roof.",
        "What energy upgrade is her household considering?",
        ["solar"],
        "When did Mara first consider the energy upgrade?",
        ["solar"],
    ),
    (
        "films",
        12,
        "J",
        "I can't stand horror films, they give me nightmares.",
        "Which movie genre does he dislike?",
        ["horror"],
        "When did Jonas admit which movie genre he dislikes?",
        ["horror"],
    ),
    (
        "foodbank",
        13,
        "M",
        "I'm volunteering at the food bank on Saturdays now.",
        "Where does she give her time at weekends?",
        ["food bank"],
        "When did Mara begin volunteering?",
        ["food bank"],
    ),
    (
        "flat",
        14,
        "J",
        "My flat in Leith has a view of the harbour.",
        "What can he see out of his windows?",
        ["harbour"],
        "When did Jonas describe the view from home?",
        ["harbour"],
    ),
    (
        "maths",
        15,
        "M",
        "Elsie's teacher says she's top of the class in maths.",
        "How is her kid doing at school with numbers?",
        ["top"],
        "When did Mara hear about her kid's progress with numbers?",
        [["maths", "top", "teacher"]],
    ),
    (
        "pens",
        15,
        "J",
        "I collect vintage fountain pens, I have about forty.",
        "What does he hoard as a hobby?",
        ["fountain pen"],
        "When did Jonas mention his collection?",
        ["fountain pen"],
    ),
    (
        "sleep",
        16,
        "M",
        "I've been sleeping badly since the clocks changed.",
        "What's troubling her at night?",
        ["sleep"],
        "When did Mara complain about her nights?",
        [["sleep", "clocks"]],
    ),
    (
        "band",
        17,
        "J",
        "My favourite band is Sigur Ros, I saw them in Reykjavik.",
        "Which Icelandic group does he adore?",
        ["Sigur Ros"],
        "When did Jonas name the group he adores?",
        ["Sigur Ros"],
    ),
    (
        "piano",
        18,
        "M",
        "I bought a second-hand upright piano for the living room.",
        "What musical instrument did she purchase?",
        ["piano"],
        "When did Mara purchase the instrument?",
        ["piano"],
    ),
    (
        "japan",
        19,
        "J",
        "I'm saving up for a trip to Japan next year.",
        "Which Asian country does he hope to visit?",
        ["Japan"],
        "When did Jonas first mention the Asian trip?",
        ["Japan"],
    ),
    (
        "licence",
        20,
        "M",
        "I passed my driving test on the second attempt.",
        "What licence did she earn?",
        ["driving"],
        "When did Mara qualify to drive?",
        ["driving"],
    ),
    (
        "cat",
        21,
        "J",
        "My neighbour's cat keeps sleeping in my laundry basket.",
        "Which animal naps in his clothes hamper?",
        ["cat"],
        "When did Jonas mention the animal napping in his hamper?",
        ["cat"],
    ),
    (
        "pottery",
        22,
        "M",
        "I've taken up pottery, the studio is near the canal.",
        "What craft hobby did she begin?",
        ["pottery"],
        "When did Mara pick up her craft?",
        ["pottery"],
    ),
    (
        "thesis",
        23,
        "J",
        "I finally finished my thesis on glacier retreat.",
        "What was his dissertation about?",
        ["glacier"],
        "When did Jonas complete his dissertation?",
        [["thesis", "glacier"]],
    ),
    (
        "friend",
        24,
        "M",
        "My best friend Priya is moving to Toronto.",
        "Which Canadian city is her closest pal relocating to?",
        ["Toronto"],
        "When did Mara hear her pal was relocating?",
        ["Toronto"],
    ),
    (
        "therapy",
        25,
        "J",
        "I started therapy, and it's helping with the stress.",
        "What is he doing for his mental health?",
        ["therapy"],
        "When did Jonas begin looking after his mental health?",
        ["therapy"],
    ),
]

# (key of the earlier fact, session, later evidence, question about the current value, its answer)
UPDATES = [
    (
        "job",
        13,
        "I left the hospital; I run my own little pharmacy on Constitution Street now.",
        "Where is Mara employed at present?",
        [["pharmacy", "Constitution Street"]],
    ),
    ("car", 16, "I sold the Skoda and bought an electric Kia.", "What does Jonas drive nowadays?", ["Kia"]),
    (
        "wifi",
        19,
        "We changed the wifi password to otter-lantern-12.",
        "What is the current network passphrase at Jonas's?",
        ["otter-lantern-12"],
    ),
    (
        "holiday",
        8,
        "We cancelled Skye; we're going to Lisbon in August instead.",
        "Where will Mara spend the late-summer break?",
        ["Lisbon"],
    ),
    ("sister", 18, "Ingrid finished her PhD and moved back to Oslo.", "Which city does Jonas's sister live in these days?", ["Oslo"]),
    ("author", 21, "Honestly my favourite writer now is Kazuo Ishiguro.", "Who is Mara's top novelist at the moment?", ["Ishiguro"]),
    ("diet", 20, "I've gone fully vegan since March.", "What diet does Jonas follow now?", ["vegan"]),
    ("language", 17, "I dropped Spanish and switched to Italian lessons.", "Which language is Mara learning currently?", ["Italian"]),
    (
        "promotion",
        24,
        "I left the studio to freelance as an illustrator.",
        "What is Jonas's work situation now?",
        [["freelance", "illustrator"]],
    ),
    ("pet", 14, "We renamed the dog Pepper, Biscuit never stuck.", "What is Mara's pet called now?", ["Pepper"]),
    ("triathlon", 22, "The triathlon got moved to Stavanger, same date.", "In which town is Jonas's race happening?", ["Stavanger"]),
    ("boiler", 10, "The plumber postponed until Monday, so still no hot water.", "When is the heating repair visit scheduled?", ["Monday"]),
    ("flat", 23, "We moved out of Leith into a house in Portobello.", "Where does Jonas live now?", ["Portobello"]),
    ("race", 19, "New personal best: I ran the half in one hour forty-eight.", "What is Mara's best half-marathon time?", ["forty-eight"]),
    ("book", 12, "I put the Lovelace book down and started Middlemarch.", "What book is Jonas reading currently?", ["Middlemarch"]),
    (
        "solar",
        23,
        "We had a heat pump installed instead of the solar panels.",
        "Which energy upgrade did Mara's household go for in the end?",
        ["heat pump"],
    ),
    ("pens", 25, "The pen collection is up to sixty-five now.", "How many pens does Jonas own now?", ["sixty-five"]),
    ("foodbank", 24, "I moved my food bank shift to Sunday mornings.", "Which day does Mara volunteer these days?", ["Sunday"]),
    ("japan", 25, "Japan is off, we're doing Patagonia instead.", "Which trip is Jonas planning now?", ["Patagonia"]),
    ("wedding", 15, "Tomas moved the wedding to Seville.", "Where will Mara's brother get married after all?", ["Seville"]),
]

# (fact key, fact key, question needing both, its answer: a part from each)
MULTI_HOP = [
    ("cello", "piano", "Which instrument does Jonas practise, and which did Mara purchase for her lounge?", ["cello", "piano"]),
    ("allergy", "dish", "Could Jonas, given his intolerance, eat the meal Mara likes best?", [["shellfish", "prawns"], ["tagine", "lamb"]]),
    ("pet", "cat", "Which animals live with Mara and doze in Jonas's hamper?", [["beagle", "puppy", "Biscuit"], "cat"]),
    ("sister", "triathlon", "Is Jonas's race in the same town his sibling studies in?", ["Trondheim", "Bergen"]),
    (
        "job",
        "dad",
        "Would Mara's hospital work help Jonas's father after his surgery?",
        [["pharmacist", "hospital"], ["knee", "operation"]],
    ),
    ("nan", "wedding", "Which family celebrations are coming for Mara's nan and her sibling?", ["ninety", ["married", "Porto"]]),
    ("holiday", "japan", "Where are Mara's late-summer plans and Jonas's Asian travel hopes?", ["Skye", "Japan"]),
    ("race", "triathlon", "What endurance events have Mara and Jonas done or planned?", ["marathon", "triathlon"]),
    ("author", "book", "Which writers are Mara and Jonas each into?", [["Le Guin", "Ursula"], "Lovelace"]),
    ("kitchen", "trees", "What home and garden projects did the two friends finish?", [["painted", "sage"], "apple"]),
    ("wrist", "licence", "Who got hurt cycling and who qualified to drive?", ["wrist", "driving"]),
    ("language", "japan", "Which foreign tongue is Mara studying, and which Asian country does Jonas want to visit?", ["Spanish", "Japan"]),
    ("tooth", "maths", "How is Mara's kid growing up, at home and at school?", ["tooth", ["maths", "top"]]),
    ("boiler", "solar", "What heating or energy changes happened at Mara's home?", ["boiler", "solar"]),
    ("promotion", "thesis", "What career and academic milestones did Jonas reach?", [["team lead", "promoted"], ["thesis", "glacier"]]),
    ("films", "band", "What entertainment does Jonas hate and which does he adore?", ["horror", "Sigur Ros"]),
    ("foodbank", "pottery", "How does Mara spend her free time lately?", ["food bank", "pottery"]),
    ("flat", "cat", "What does Jonas see from home and who naps in his hamper?", ["harbour", "cat"]),
    ("pens", "cello", "What are Jonas's two hobbies?", ["fountain pen", "cello"]),
    ("sleep", "therapy", "How are the two friends coping with nights and stress?", ["sleep", "therapy"]),
    ("friend", "sister", "Which Canadian and Norwegian cities did people close to them move to?", ["Toronto", "Trondheim"]),
    ("diet", "dish", "Would the lamb meal Mara loves suit Jonas's eating habits?", ["vegetarian", ["lamb", "tagine"]]),
    ("car", "licence", "Who drives what, now that Mara qualified?", [["Skoda", "Octavia"], "driving"]),
    ("wedding", "holiday", "Which two trips abroad or to islands are in Mara's family plans?", ["Porto", "Skye"]),
    ("piano", "maths", "What instrument and school subject are going well in Mara's household?", ["piano", "maths"]),
]

ADVERSARIAL = [
    "What is the name of Jonas's brother?",
    "Which university did Mara graduate from?",
    "How many cats does Mara own?",
    "What is Jonas's blood type?",
    "Where did Mara grow up as a child?",
    "What colour are Jonas's eyes?",
    "Which football team does Mara support?",
    "What is the name of Jonas's wife?",
    "How much did Mara pay for her house?",
    "Which political party does Jonas vote for?",
    "What was Mara's first car?",
    "Which hospital was Jonas born in?",
    "What is Mara's husband's job?",
    "How tall is Jonas?",
    "What is the name of Mara's goldfish?",
    "Which chess opening does Jonas prefer?",
    "What did Mara study at school for her A-levels?",
    "Where does Jonas's mother live?",
    "Which airline does Mara fly most often?",
    "What is Jonas's favourite cocktail?",
    "How many siblings does Jonas's father have?",
    "Which gym does Mara go to?",
    "What is the registration plate of Jonas's bike?",
    "When is Jonas's birthday?",
    "What did Mara dress up as for Halloween?",
]

REACTIONS = {
    "M": [
        "Oh wow, that's big news!",
        "Really? Tell me more some time.",
        "Ha, I didn't see that coming.",
        "That's lovely to hear.",
        "Good for you, honestly.",
    ],
    "J": [
        "No way, that's great.",
        "Nice, I'm glad you told me.",
        "Huh, I'll remember that.",
        "That sounds like a lot, but good.",
        "Congratulations, seriously.",
    ],
}
OPENERS = ["Hey, how was your week?", "Morning! Got a minute to chat?", "Hi again, long time no talk.", "Evening! How are things?"]
SMALL_TALK = [
    "The weather has been {w} all week here.",
    "I watched a {adj} documentary about {topic} last night.",
    "Work was {adj}, lots of meetings about {topic}.",
    "We had {food} for dinner, nothing special.",
    "I keep meaning to sort out {chore} but never do.",
    "Did you see the news about {topic}?",
    "My neighbour was talking about {topic} again.",
    "I spent Sunday doing {chore}, very exciting.",
    "Some people at work are really into {topic} lately.",
    "I read an article about {topic}, it was {adj}.",
    "Traffic was {adj} this morning.",
    "I tried a new recipe with {food}, it turned out {adj}.",
    "A friend of a friend has a dog that barks at {topic}.",
    "I was thinking about cars and jobs and all that boring adult stuff.",
    "Someone on the bus was reading a thick novel, I wondered what it was.",
    "The shop round the corner started selling {food}.",
]
ANSWERS = [
    "Ha, same here really.",
    "That sounds {adj}.",
    "Oh, I know what you mean.",
    "Honestly, I'd have done the same.",
    "Mm, fair enough.",
    "I should try that some time.",
    "Classic. Nothing changes.",
    "Right? It's been one of those weeks.",
    "I saw something about that too, it was {adj}.",
    "We should catch up properly soon.",
]
WORDS = {
    "w": ["grey", "windy", "surprisingly mild", "wet", "freezing", "bright but cold"],
    "adj": ["fine", "a bit dull", "interesting", "exhausting", "oddly relaxing", "hectic", "not bad"],
    "topic": [
        "the new tram line",
        "electric scooters",
        "the council budget",
        "rent prices",
        "a local election",
        "the bridge repairs",
        "a celebrity chef",
        "space telescopes",
    ],
    "food": ["pasta", "leftover soup", "a stir fry", "baked potatoes", "fish fingers", "a curry", "toast and eggs"],
    "chore": ["the garage", "my tax return", "the spare room", "the gutters", "the photo albums", "the inbox"],
}
_STOP_WORDS = (
    "a an the and or but of to in on at for with by from is are was were be been am i i'm i've it it's this that these those my "
    "his her their our your you he she we they him them me us what which who whom whose when where how does do did doing done "
    "has have had so no not now just still some any up out about into over after before new s"
)
STOP = frozenset(_STOP_WORDS.split())


def _fill(template: str, rng: random.Random) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: rng.choice(WORDS[m.group(1)]), template)


def content_words(text: str) -> set[str]:
    """Lower-case words without stop words, crudely stemmed (plural, -ing, -ed): the check that a
    paraphrased question shares no content word with its evidence."""
    words = set()
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in STOP or len(word) < 3:
            continue
        for suffix in ("ing", "ed", "es", "s"):
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                word = word[: -len(suffix)]
                break
        words.add(word)
    return words


def build(seed: int = 16) -> dict:
    rng = random.Random(seed)
    planted: dict[int, list[tuple[str, str, str]]] = {}  # session -> [(tag, speaker, text)]
    for key, session, speaker, text, *_ in FACTS:
        planted.setdefault(session, []).append((f"fact:{key}", speaker, text))
    speaker_of = {key: speaker for key, _, speaker, *_ in FACTS}
    for key, session, text, *_ in UPDATES:
        planted.setdefault(session, []).append((f"update:{key}", speaker_of[key], text))
    messages, ids = [], {}
    for session in range(SESSIONS):
        day = FIRST_DAY + timedelta(days=9 * session + rng.randint(0, 3))
        lines: list[tuple[str, str, str]] = [("", "M" if session % 2 == 0 else "J", rng.choice(OPENERS))]
        events = list(planted.get(session, []))
        slots = sorted(rng.sample(range(2, MESSAGES_PER_SESSION - 6), len(events) * 2)[::2])
        while len(lines) < MESSAGES_PER_SESSION:
            speaker = "J" if lines[-1][1] == "M" else "M"
            if events and slots and len(lines) >= slots[0]:
                slots.pop(0)
                tag, said_by, text = events.pop(0)
                if said_by != speaker:
                    lines.append(("", speaker, _fill(rng.choice(SMALL_TALK), rng)))
                    speaker = said_by
                lines.append((tag, speaker, text))
                other = "J" if speaker == "M" else "M"
                lines.append(("", other, rng.choice(REACTIONS[other])))
                continue
            template = rng.choice(SMALL_TALK if rng.random() < 0.55 else ANSWERS)
            lines.append(("", speaker, _fill(template, rng)))
        assert not events, f"session {session} could not place every fact"
        for index, (tag, speaker, text) in enumerate(lines[: MESSAGES_PER_SESSION + 2]):
            client_id = f"s{session:02d}-m{index:02d}"
            role, name = PEOPLE[speaker]
            minute = 19 * 60 + index * 2
            messages.append(
                {
                    "client_id": client_id,
                    "role": role,
                    "name": name,
                    "content": text,
                    "timestamp": f"{day.isoformat()}T{minute // 60:02d}:{minute % 60:02d}:00Z",
                }
            )
            if tag:
                ids[tag] = (client_id, day.isoformat())
    return {"people": ["Mara", "Jonas"], "messages": messages, "questions": _questions(ids)}


def _questions(ids: dict) -> list[dict]:
    texts = {f"fact:{key}": text for key, _, _, text, *_ in FACTS} | {f"update:{key}": text for key, _, text, *_ in UPDATES}
    questions = []

    def add(question: dict, tags: list[str]) -> None:
        question["evidence"] = [ids[tag][0] for tag in tags]
        if question["kind"] != "adversarial":
            _check_answer(question, [texts[tag] for tag in tags])
        questions.append(question)

    for key, _, _, text, paraphrase, answer, temporal, temporal_answer in FACTS:
        day = ids[f"fact:{key}"][1]
        shared = content_words(paraphrase) & content_words(text)
        assert not shared, f"the paraphrase of {key!r} shares {shared} with its evidence"
        add({"id": f"single-{key}", "kind": "single", "question": paraphrase, "answer": answer}, [f"fact:{key}"])
        add({"id": f"temporal-{key}", "kind": "temporal", "question": temporal, "answer": temporal_answer, "date": day}, [f"fact:{key}"])
    for key, _, _, question, answer in UPDATES:
        add({"id": f"updated-{key}", "kind": "updated", "question": question, "answer": answer}, [f"update:{key}"])
        questions[-1]["earlier"] = [ids[f"fact:{key}"][0]]
    for a, b, question, answer in MULTI_HOP:
        add({"id": f"multi-{a}-{b}", "kind": "multi_hop", "question": question, "answer": answer}, [f"fact:{a}", f"fact:{b}"])
    for i, question in enumerate(ADVERSARIAL):
        add({"id": f"adversarial-{i}", "kind": "adversarial", "question": question, "answer": []}, [])
    return questions


Answer = list[str | list[str]]


def mentions(text: str, word: str) -> bool:
    """Whether `text` says `word` (or phrase): case-insensitive, whole words, with a plural or verb
    ending allowed ("fountain pen" in "fountain pens", "sleep" in "sleeping")."""
    pattern = r"\s+".join(re.escape(part) for part in word.split())
    return re.search(rf"(?<![\w-]){pattern}(?:s|es|d|ed|ing)?(?![\w-])", text, re.IGNORECASE) is not None


def answer_of(answer: Answer, text: str) -> list[list[str]]:
    """The entries of `answer` that message `text` holds (each as its alternatives): what a piece
    standing for that message must say. A two-part question's entries split between its messages."""
    entries = [[entry] if isinstance(entry, str) else entry for entry in answer]
    return [alternatives for alternatives in entries if any(mentions(text, word) for word in alternatives)]


def says(text: str, entries: list[list[str]]) -> bool:
    """Whether `text` says every entry (any one of its alternatives)."""
    return all(any(mentions(text, word) for word in alternatives) for alternatives in entries)


def _check_answer(question: dict, evidence: list[str]) -> None:
    """Every alternative of every entry occurs in an evidence message (derived from what was said,
    not from what a question hopes for), and every evidence message holds part of the answer."""
    assert question["answer"], f"{question['id']} has no answer words"
    for entry in question["answer"]:
        alternatives = [entry] if isinstance(entry, str) else entry
        for word in alternatives:
            assert any(mentions(text, word) for text in evidence), f"{question['id']}: {word!r} is in none of its evidence messages"
        assert len([t for t in evidence if any(mentions(t, w) for w in alternatives)]) == 1 or len(evidence) == 1, (
            f"{question['id']}: {entry!r} is in both of its evidence messages (it cannot tell them apart)"
        )
    for text in evidence:
        assert answer_of(question["answer"], text), f"{question['id']}: no answer word of {text!r}"


def load() -> dict:
    return json.loads(PATH.read_text())


if __name__ == "__main__":
    data = build()
    PATH.write_text(json.dumps(data, indent=1) + "\n")
    kinds: dict[str, int] = {}
    for question in data["questions"]:
        kinds[question["kind"]] = kinds.get(question["kind"], 0) + 1
    print(f"{len(data['messages'])} messages, {len(data['questions'])} questions {kinds} -> {PATH}")
