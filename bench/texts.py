"""Distinct message texts for every benchmark request, so no embedding cache or response cache hit
hides what a new message costs: a run id, a counter and eight random words. The wrk script
(`bench/wrk.py`) builds its texts the same way from the same words."""

from __future__ import annotations

import random
import secrets

# Common English words: texts that tokenize and embed like chat, not like hex strings.
_WORDS = (
    "about after again air also animal answer area back because before begin between big book both boy build call came "
    "change city close come country cover cross day different does dog door down draw during early earth eat end enough "
    "even every eye face family far farm father feet few field find fire first fish follow food form found friend garden "
    "girl give good great green group grow hand hard head hear help high home horse house idea important keep kind know "
    "land large last late learn leave left letter life light line list little live long look machine made make man many "
    "map mean men might mile mind money more morning mother mountain move much music name near need never next night "
    "number often old once only open order other page paper part people picture place plant play point port power press "
    "question quick rain read real record right river road rock room round run said same school sea second see sentence "
    "ship short show side simple small song sound spell stand star start state still stop story street study sun table "
    "take talk tell thing think thought three time together took town tree try turn under until upon use very voice walk "
    "want watch water way weather while white whole wind window winter without word work world write year young"
)
WORDS = _WORDS.split()

RUN = secrets.token_hex(3)  # differs between runs: a database kept from an earlier run has none of these texts
_rng = random.Random()
_count = 0


def distinct(prefix: str = "") -> str:
    """A message text no request of this run has used."""
    global _count
    _count += 1
    words = " ".join(_rng.choices(WORDS, k=8))
    return f"{prefix}{RUN}-{_count} {words}"
