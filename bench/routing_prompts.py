"""A labelled set of chat requests for adaptive routing (issue 19): each one `simple` (a cheap model
answers it as well as a strong one: short factual questions, chit-chat, lookups, rewording, a
question about one fact of a pasted text) or `complex` (it needs the strong model: multi-step
reasoning, code, analysis or summary of long documents, tool use, design, comparison).

Authored by hand for bench/routing_quality.py, not sampled from traffic: the labels are one
engineer's judgement, and the set holds the hard cases on purpose (short prompts that need
reasoning, long pasted texts asked one easy question), because those are where a rule on token
count alone goes wrong. Long documents are built from a seeded word list so the file stays small.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from bench.texts import WORDS

SYSTEM = "You are a helpful assistant."


@dataclass(frozen=True)
class Example:
    label: str  # "simple" or "complex"
    kind: str  # what sort of request, for the per-kind table
    text: str
    tools: tuple[dict[str, Any], ...] = field(default=())

    def body(self) -> dict[str, Any]:
        """The provider call's body as routing sees it: the agent's system prompt, then the user's message."""
        body: dict[str, Any] = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": self.text}]}
        if self.tools:
            body["tools"] = list(self.tools)
        return body


def _document(seed: int, words: int) -> str:
    """A pasted document: sentences of common words, `words` long, the same for a seed on every run."""
    rng = random.Random(seed)
    sentences, count = [], 0
    while count < words:
        length = rng.randint(8, 20)
        sentences.append(" ".join(rng.choices(WORDS, k=length)).capitalize() + ".")
        count += length
    return " ".join(sentences)


def _tool(name: str, description: str, **params: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": {p: {"type": t} for p, t in params.items()}, "required": list(params)},
        },
    }


WEATHER = _tool("get_weather", "The current weather in a city.", city="string")
SEARCH = _tool("search_orders", "Find a customer's orders.", customer_id="string", status="string")
CALENDAR = _tool("create_event", "Create a calendar event.", title="string", start="string", minutes="integer")
SQL = _tool("run_sql", "Run a read-only SQL query on the analytics warehouse.", query="string")

FACTUAL = [
    "What is the capital of Australia?",
    "Who wrote Pride and Prejudice?",
    "How many legs does a spider have?",
    "What year did the Berlin Wall fall?",
    "What is the boiling point of water in Fahrenheit?",
    "Who painted the Mona Lisa?",
    "What is the chemical symbol for gold?",
    "How many continents are there?",
    "What's the tallest mountain in Africa?",
    "Which planet is closest to the sun?",
    "What is the largest ocean?",
    "Who was the first person to walk on the moon?",
    "What language is spoken in Brazil?",
    "How many days are in a leap year?",
    "What is the square root of 81?",
    "What currency does Japan use?",
    "When is Bastille Day?",
    "What is the speed of light in km/s?",
    "Who discovered penicillin?",
    "What's the freezing point of water in Celsius?",
    "What is the longest river in Europe?",
    "How many players are on a soccer team?",
    "What is the main ingredient in guacamole?",
    "Which element has atomic number 1?",
    "What's 15% of 200?",
    "Who is the author of 1984?",
    "What is the smallest prime number?",
    "In which country is Machu Picchu?",
    "How many minutes are in a day?",
    "What does HTTP stand for?",
    "what's the population of canada roughly",
    "capital of mongolia?",
    "Is a tomato a fruit?",
    "What is the plural of cactus?",
    "How many ounces in a pound?",
    "Who invented the telephone?",
    "What is the hardest natural substance?",
    "Which country has the most people?",
    "What's the largest desert in the world?",
    "How many bones are in the adult human body?",
    "What gas do plants absorb from the air?",
    "Who composed the Four Seasons?",
    "What's the capital of Canada?",
    "How far is the moon from Earth?",
    "What is the currency of Switzerland?",
]
CHAT = [
    "Hi!",
    "Hello, how are you today?",
    "Thanks, that helped a lot.",
    "Good morning!",
    "lol that's funny",
    "Can you tell me a joke?",
    "What's your name?",
    "ok thanks bye",
    "I'm bored.",
    "Nice, cheers.",
    "Have a great weekend!",
    "Sorry, I meant Tuesday, not Monday.",
    "Do you like music?",
    "You're awesome.",
    "Tell me a fun fact.",
    "yes please",
    "Never mind.",
    "What's a good name for a goldfish?",
    "I just got a new puppy!",
    "Recommend a movie for tonight.",
]
LOOKUP = [
    "Translate 'good night' into Spanish.",
    "What's a synonym for 'happy'?",
    "Spell 'necessary'.",
    "Convert 5 miles to kilometres.",
    "What time zone is Chicago in?",
    "Define 'ephemeral'.",
    "What's the opposite of 'generous'?",
    "How do you say thank you in Japanese?",
    "Give me the ISO code for Germany.",
    "What is 12 times 14?",
    "Fix the spelling: 'recieve the pakage tommorow'.",
    "Make this sentence more polite: 'Send me the file now.'",
    "What port does HTTPS use by default?",
    "Rewrite in the past tense: 'She walks to school.'",
    "What's the keyboard shortcut to copy on a Mac?",
    "What does the acronym NASA stand for?",
    "Is 'irregardless' a real word?",
    "Convert 100 USD to cents.",
    "What's the file extension for a Python script?",
    "List the days of the week in French.",
    "What is the git command to see the current branch?",
    "What's the difference in hours between London and New York?",
    "Give me a word that rhymes with 'orange'.",
    "Shorten this to five words: 'We will be arriving at the station a bit later than planned.'",
    "What is the HTTP status code for Not Found?",
]
REASONING = [
    "Prove that there are infinitely many prime numbers.",
    "A train leaves at 3pm going 60 mph; another leaves the same station "
    "at 4pm going 80 mph. When does the second catch up? Show your reasoning.",
    "If all bloops are razzies and some razzies are lazzies, must some bloops be lazzies? Explain.",
    "Explain step by step how to solve 3x + 7 = 2x - 5 and check the answer.",
    "Why does the Monty Hall problem favour switching? Walk me through it.",
    "Compare the causes of World War I and World War II.",
    "I have 3 boxes, one with apples, one with oranges, one mixed, all labelled wrong. How do I fix the labels by picking one fruit?",
    "Estimate how many piano tuners there are in Chicago and explain each assumption.",
    "Explain why the sky is blue but sunsets are red.",
    "Derive the quadratic formula.",
    "What are the trade-offs between renting and buying a home in a high-interest environment?",
    "Plan a 5-day itinerary for Japan for someone who loves food and hiking, with a budget breakdown.",
    "Explain how public-key cryptography works to a high-school student, with an example.",
    "Compare Keynesian and monetarist views on inflation.",
    "Solve: a bat and a ball cost $1.10, the bat costs $1 more than the ball. "
    "How much is the ball? Explain why the intuitive answer is wrong.",
    "Analyze the strengths and weaknesses of the argument that remote work lowers productivity.",
    "Why do we have leap years, and why is 1900 not one?",
    "How would you design an experiment to test whether a new fertilizer increases crop yield?",
    "Walk me through how a bill becomes law in the US, and where it can fail.",
    "What would happen to the Earth's climate if the moon disappeared? Reason it out.",
    "Evaluate the pros and cons of nuclear power versus solar for a small country.",
    "Explain the difference between correlation and causation, with two examples where confusing them caused harm.",
    "Think step by step: how many times a day do a clock's hour and minute hands overlap?",
    "Why is dividing by zero undefined? Give an intuitive and a formal explanation.",
    "Outline a strategy for paying off three credit cards with different interest rates and balances.",
    "Explain how vaccines train the immune system.",
    "Compare the French and American revolutions: causes, course and outcomes.",
    "Is it ethical for self-driving cars to prioritise passengers over pedestrians? Argue both sides.",
    "Summarize the main arguments for and against a universal basic income, then give your assessment.",
    "A company's revenue grew 20% and costs grew 30%; profit was 10% of revenue. What is the new profit margin? Show the calculation.",
    "How does compound interest differ from simple interest? Work through $1000 at 5% over 10 years both ways.",
    "Prove that the square root of 2 is irrational.",
    "Explain why quicksort is O(n log n) on average but O(n^2) in the worst case.",
    "Describe how you would negotiate a salary offer that is 15% below market, step by step.",
    "What caused the 2008 financial crisis? Explain the chain of events.",
    "Why did the Roman Empire fall?",
    "How should a startup decide between raising venture capital and bootstrapping? Consider dilution, control and speed.",
    "Critique this plan: we will double sales by halving prices.",
    "If I invest $500 a month at 7% for 30 years, how much will I have? Show the formula and the steps.",
    "Explain how a transformer neural network processes a sentence.",
    "Which is the better first language for a data scientist, R or Python, and why?",
    "Given the premises 'no cats are dogs' and 'some pets are cats', what can you conclude about pets and dogs?",
    "Explain the prisoner's dilemma and how repeated games change the best strategy.",
    "Design a study schedule for learning linear algebra in eight weeks, with milestones.",
    "How does inflation affect bond prices? Reason through an example.",
]
CODE = [
    "Write a Python function that returns the n-th Fibonacci number in O(log n) time.",
    "Fix this bug:\n```python\ndef avg(xs):\n    return sum(xs) / len(xs) if xs else None\nprint(avg([]) + 1)\n```",
    "Implement an LRU cache class in Java with get and put in O(1).",
    "Refactor this into smaller functions:\n```js\nfunction go(a){for(let i=0;i<a.length;i++){if(a[i]>0)"
    "{console.log(a[i]*2)}else{console.log(-a[i])}}}\n```",
    "Write a SQL query that finds the top 3 customers by total order value per month.",
    'Why does this Rust code not compile?\n```rust\nlet s = String::from("hi");\nlet t = s;\nprintln!("{}", s);\n```',
    "Write a bash script that backs up a directory to S3 every night and keeps 7 days.",
    "Explain what this regex does: ^(?=.*[A-Z])(?=.*\\d).{8,}$",
    "Convert this Python 2 code to Python 3:\n```python\nprint 'hello'\nd = {}\nif d.has_key('a'): pass\n```",
    "Design a REST API for a library system: endpoints, status codes and pagination.",
    "Write unit tests for a function that validates email addresses.",
    "Implement binary search in Go and explain the loop invariant.",
    "My React component re-renders forever. Here it is:\n```jsx\nfunction A(){const [x,setX]=useState(0); "
    "setX(x+1); return <p>{x}</p>}\n```",
    "How do I make this query faster?\n```sql\nSELECT * FROM orders WHERE lower(email) = 'a@b.c' ORDER BY created_at DESC;\n```",
    "Write a Dockerfile for a Django app with gunicorn and a non-root user.",
    "Implement a thread-safe queue in C++ with a condition variable.",
    "Explain the difference between a process and a thread, and when to use each in Python.",
    "Write a function to detect a cycle in a linked list and explain why it works.",
    "Review this code for security problems:\n```python\nos.system('ping ' + request.args['host'])\n```",
    "Parse a CSV of transactions in pandas and plot the monthly totals.",
    "Write a TypeScript type that makes every property of an object optional and readonly, recursively.",
    "Implement Dijkstra's algorithm in Python with a heap.",
    "debug: `TypeError: 'NoneType' object is not subscriptable` when I call data['items'][0] after requests.get(url).json()",
    "Write a Kubernetes deployment and service for an nginx container with 3 replicas.",
    "Create a GitHub Actions workflow that runs pytest on Python 3.11 and 3.12.",
]
TOOL_USE = [
    ("What's the weather in Paris right now?", WEATHER),
    ("Is it raining in Seattle?", WEATHER),
    ("Do I need an umbrella in London today?", WEATHER),
    ("Find the open orders for customer C-1042.", SEARCH),
    ("Has customer 77 had any refunded orders?", SEARCH),
    ("Show me customer 9's shipped orders and tell me which is the oldest.", SEARCH),
    ("Book a 30-minute meeting called 'Sync' tomorrow at 10am.", CALENDAR),
    ("Put 'Dentist' in my calendar on Friday at 3pm for an hour.", CALENDAR),
    ("How many signups did we get last week by country?", SQL),
    ("What was our churn rate in March compared to February?", SQL),
    ("Which product category grew fastest this quarter?", SQL),
    ("Schedule a review for every open order older than 30 days for customer C-5.", SEARCH),
]


def _long_documents() -> list[Example]:
    """Pasted texts: asked to summarise, analyse or compare (complex), or asked one fact of (simple:
    the hard case for a rule on length)."""
    found = []
    asks_complex = [
        "Summarize the document below in five bullet points and list its open questions.",
        "Analyze the argument in this report and point out its weakest claims.",
        "Compare the two halves of this text: where do they disagree?",
        "Extract every action item from these meeting notes, with owners and deadlines, as a table.",
        "Rewrite this report for an executive audience and explain what you changed.",
        "Review this contract text and explain the risks for the buyer.",
    ]
    asks_simple = [
        "What is the first word of the text below?",
        "Does the text below mention the word 'river'? Yes or no.",
        "Translate only the title of this text into French. Title: The Garden.",
        "How many paragraphs does the following have? Just the number.",
    ]
    for index, ask in enumerate(asks_complex):
        for size in (600, 1500, 4000):
            found.append(Example("complex", "long document", f"{ask}\n\n{_document(index * 10 + size, size)}"))
    for index, ask in enumerate(asks_simple):
        for size in (600, 1500, 4000):
            found.append(Example("simple", "long text, one fact", f"{ask}\n\n{_document(1000 + index * 10 + size, size)}"))
    return found


def examples() -> list[Example]:
    """The whole labelled set, in a fixed order."""
    return [
        *(Example("simple", "factual", text) for text in FACTUAL),
        *(Example("simple", "chit-chat", text) for text in CHAT),
        *(Example("simple", "lookup", text) for text in LOOKUP),
        *(Example("complex", "reasoning", text) for text in REASONING),
        *(Example("complex", "code", text) for text in CODE),
        *(Example("complex", "tool use", text, (tool,)) for text, tool in TOOL_USE),
        *_long_documents(),
    ]
