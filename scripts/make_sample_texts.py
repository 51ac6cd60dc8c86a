"""Write the bundled datasets in ``sample_texts/`` from templates and a fixed seed.

Every word of every dataset comes from this file: hand-written sentence
templates, word lists and small grammars, filled in by a seeded random
generator. Running it again writes byte-identical files, so the datasets can be
checked (``--check``) and changed only by changing this script.

    python scripts/make_sample_texts.py           # rewrite sample_texts/
    python scripts/make_sample_texts.py --check   # exit 1 if the files differ

The datasets are made to be learnable by a model of a few million parameters
within minutes: small vocabularies, repeated structures, and facts that are
consistent (the arithmetic is computed, the code's tests pass).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SEED = 20240611
OUTPUT_DIR = Path(__file__).resolve().parent.parent / "sample_texts"


def pick(rng: random.Random, options):
    """One option, chosen by the seeded generator (a thin name for readability)."""
    return rng.choice(options)


def article(noun: str) -> str:
    """'an owl', 'a fox'."""
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def capital(text: str) -> str:
    """The text with its first letter in upper case."""
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------
# Fables: short animal stories, each built from one of seven plots.
# --------------------------------------------------------------------------

ANIMALS = [
    "fox",
    "heron",
    "badger",
    "crow",
    "hare",
    "tortoise",
    "mole",
    "wren",
    "otter",
    "goat",
    "beaver",
    "owl",
    "mouse",
    "lark",
    "toad",
    "stag",
    "weasel",
    "squirrel",
    "bear",
    "magpie",
    "lynx",
    "hedgehog",
    "swallow",
    "ox",
    "boar",
    "sparrow",
    "frog",
    "rabbit",
    "duck",
    "vole",
    "marten",
    "kingfisher",
    "salmon",
    "ant",
    "cricket",
    "robin",
]
FAST_ANIMALS = ["hare", "stag", "swallow", "lynx", "weasel", "rabbit", "marten", "lark"]
SLOW_ANIMALS = ["tortoise", "toad", "mole", "hedgehog", "ox", "beaver", "badger", "vole"]
VAIN_FEATURES = {
    "fox": "red tail",
    "heron": "long grey legs",
    "magpie": "shining feathers",
    "stag": "great antlers",
    "lark": "sweet voice",
    "peacock": "bright fan",
    "lynx": "tufted ears",
    "kingfisher": "blue back",
    "swallow": "forked tail",
    "robin": "red breast",
    "squirrel": "bushy tail",
    "otter": "sleek coat",
}
PLACES = [
    ("by a slow brown river", "river"),
    ("at the edge of a birch wood", "wood"),
    ("in a meadow full of clover", "meadow"),
    ("under the roots of an old oak", "oak wood"),
    ("on a hill above the village", "hill"),
    ("beside a quiet mill pond", "pond"),
    ("among the reeds of a wide marsh", "marsh"),
    ("in a valley where the snow came early", "valley"),
    ("near a stone bridge", "bridge"),
    ("in an orchard gone wild", "orchard"),
    ("on the bank of a cold stream", "stream"),
    ("at the foot of a windy cliff", "cliff"),
    ("in a field of tall barley", "field"),
    ("beside a hedge of blackthorn", "hedgerow"),
]
TIMES = [
    "One autumn",
    "Early one spring morning",
    "In the middle of a dry summer",
    "When the first frost came",
    "On a windy evening",
    "One grey winter",
    "Late one summer night",
    "On the first warm day of the year",
    "One rainy week in April",
    "At harvest time",
    "Long ago",
    "Once, in a hard year",
]
FOODS = [
    "a basket of walnuts",
    "a ripe pear",
    "a piece of honeycomb",
    "a heap of acorns",
    "a silver fish",
    "a handful of blackberries",
    "a round cheese",
    "a sack of grain",
    "a bunch of sweet clover",
    "a crust of bread",
    "three red apples",
    "a pile of hazelnuts",
]
TASKS = [
    ("cross the river when the bridge was washed away", "crossed the river"),
    ("reach the plums at the top of a tall tree", "reached the plums"),
    ("roll a heavy stone away from the mouth of a burrow", "rolled the stone away"),
    ("carry a load of twigs up the hill before the storm", "carried the twigs up the hill"),
    ("find the way home through a thick fog", "found the way home"),
    ("pull a lost lamb out of a ditch", "pulled the lamb out"),
    ("mend a dam that the flood had broken", "mended the dam"),
]
DANGERS = [
    ("the ice on the pond was thin", "the ice cracked", "cold water"),
    ("the river was rising after the rain", "the water rose over the bank", "the flood"),
    ("a hunter had set snares along the path", "a snare closed around a leg", "the snare"),
    ("the old bridge was rotten", "a plank broke", "the broken bridge"),
    ("a storm was coming over the hills", "the storm broke", "the storm"),
    ("the berries by the ditch were poisonous", "a terrible ache began", "the bad berries"),
]
HELP_TROUBLES = [
    ("caught in a fowler's net", "bit through the cords one by one", "freed"),
    ("stuck fast in deep mud", "pushed a long branch across the mud", "pulled out"),
    ("lost in the dark wood", "called out until the lost one followed the voice", "led home"),
    ("trapped under a fallen branch", "dug away the earth beneath it", "set loose"),
    ("tangled in a bramble bush", "held the thorny stems apart", "freed"),
]
REPAYS = [
    "ran ahead to warn that a hunter was coming, and they hid in time",
    "showed the way to a dry cave when the flood came",
    "shared a winter store when the snow lay deep and there was nothing else to eat",
    "chased off a hawk that was circling low",
    "pulled the small one out of the stream when the bank gave way",
]

MORALS = {
    "race": [
        "Steady steps go further than proud legs.",
        "The one who keeps going arrives; the one who boasts only talks.",
        "Slow and sure wins the day.",
        "A boast is not a finish line.",
    ],
    "greed": [
        "Those who grasp at everything may end with nothing.",
        "Enough, shared, is better than plenty, hoarded.",
        "Greed spoils what sharing would have saved.",
        "A full store is poor comfort to a lonely heart.",
    ],
    "kindness": [
        "No kindness is ever wasted.",
        "Help the small, for the small may one day help you.",
        "A good turn comes back by another road.",
        "Even the least of friends can be the greatest help.",
    ],
    "trick": [
        "Flattery is a hook with no bait.",
        "The trickster is often the one tricked.",
        "Sweet words can hide a hungry mouth.",
        "Beware of praise from one who wants what you hold.",
    ],
    "together": [
        "What one cannot do alone, two may do together.",
        "Many paws make light work.",
        "Each has a strength the other lacks.",
        "Friends who share the work share the reward.",
    ],
    "vanity": [
        "Fine looks will not keep out the cold.",
        "Beauty is pleasant, but work keeps a home dry.",
        "Admire yourself less and prepare yourself more.",
        "A mirror has never built a nest.",
    ],
    "warning": [
        "Listen to those who have walked the path before you.",
        "Good advice is cheaper than a hard lesson.",
        "The wise take a warning; the foolish take the consequences.",
        "Pride is a poor guide on thin ice.",
    ],
}


@dataclass
class Scene:
    """The slots a fable's sentences are filled from."""

    a: str
    b: str
    place: str
    place_short: str
    time: str


def new_scene(rng: random.Random, a: str | None = None, b: str | None = None) -> Scene:
    """Two different animals, a place and a time."""
    a = a or pick(rng, ANIMALS)
    b = b or pick(rng, [animal for animal in ANIMALS if animal != a])
    place, place_short = pick(rng, PLACES)
    return Scene(a=a, b=b, place=place, place_short=place_short, time=pick(rng, TIMES))


def opening(rng: random.Random, s: Scene, trait_a: str, trait_b: str) -> str:
    """The first sentence or two: who lived where (the time comes in the next sentence)."""
    return pick(
        rng,
        [
            f"{capital(article(trait_a))} {s.a} and {article(trait_b)} {s.b} lived {s.place}.",
            f"There was once {article(trait_a)} {s.a} who lived {s.place}, and near by lived {article(trait_b)} {s.b}.",
            f"{capital(article(trait_a))} {s.a} made its home {s.place}. Its neighbour was {article(trait_b)} {s.b}.",
            f"{capital(s.place)} there lived {article(trait_a)} {s.a}. Not far away lived {article(trait_b)} {s.b}.",
        ],
    )


def fable_race(rng: random.Random) -> tuple[str, str]:
    s = new_scene(rng, a=pick(rng, FAST_ANIMALS), b=pick(rng, SLOW_ANIMALS))
    goal = pick(
        rng,
        [
            "the old oak at the top of the hill",
            "the far side of the meadow",
            "the stone bridge",
            "the mill and back",
            "the edge of the wood",
        ],
    )
    parts = [
        opening(rng, s, pick(rng, ["proud", "boastful", "quick"]), pick(rng, ["patient", "quiet", "steady"])),
        pick(
            rng,
            [
                f'Every day the {s.a} said, "There is no one in the whole {s.place_short} as fast as I am."',
                f"The {s.a} never tired of telling everyone how fast it could run.",
                f'"Look how slowly you move," the {s.a} laughed at the {s.b}. "You will be old before you get anywhere."',
            ],
        ),
        pick(
            rng,
            [
                f'At last the {s.b} said, "Then let us race to {goal}, and we shall see."',
                f'The {s.b} answered calmly, "Race me to {goal}, if you are so sure."',
                f"One morning the {s.b} asked the {s.a} for a race to {goal}.",
            ],
        ),
        pick(
            rng,
            [
                f"The {s.a} laughed and agreed, and all the animals came to watch.",
                f"The {s.a} thought it was a joke, but it agreed, and the race began at sunrise.",
            ],
        ),
        pick(
            rng,
            [
                f"The {s.a} was soon far ahead. It lay down in the shade to rest, sure that it had time to spare, and fell asleep.",
                f"The {s.a} ran off at once, then stopped to eat clover and talk with friends, for the {s.b} was far behind.",
                f"Half way there the {s.a} stopped to show off to a crowd of sparrows, and it talked until the sun was high.",
            ],
        ),
        pick(
            rng,
            [
                f"Meanwhile the {s.b} kept walking, one step after another, and never stopped.",
                f"All the while the {s.b} moved on without a pause, slowly but without rest.",
            ],
        ),
        pick(
            rng,
            [
                f"When the {s.a} woke and ran on, the {s.b} was already waiting at {goal}.",
                f"By the time the {s.a} remembered the race, the {s.b} had reached {goal}, and the animals were cheering.",
            ],
        ),
    ]
    return f"The {capital(s.a)} and the {capital(s.b)}", " ".join(parts) + "\n\nMoral: " + pick(rng, MORALS["race"])


def fable_greed(rng: random.Random) -> tuple[str, str]:
    s = new_scene(rng)
    food = pick(rng, FOODS)
    parts = [
        opening(rng, s, pick(rng, ["greedy", "grasping", "selfish"]), pick(rng, ["generous", "kind", "hungry"])),
        pick(
            rng,
            [
                f"{s.time}, the {s.a} found {food} and carried it home.",
                f"The {s.a} came upon {food} lying in the grass and took it at once.",
            ],
        ),
        pick(
            rng,
            [
                f'The {s.b} asked for a share, but the {s.a} said, "Find your own."',
                f"When the {s.b} came by, tired and hungry, the {s.a} hid the food and said it had none.",
                f"The {s.b} had nothing to eat that day, yet the {s.a} would not give it a single bite.",
            ],
        ),
        pick(
            rng,
            [
                f"Not content, the {s.a} went out again to look for more, leaving its store unguarded.",
                f"The {s.a} wanted still more, so it hid its prize under a root and went searching the {s.place_short}.",
                f"Then the {s.a} heard of more food on the far side of the {s.place_short} and hurried off to get it first.",
            ],
        ),
        pick(
            rng,
            [
                "While it was gone, the rain came and spoiled the food it had left behind.",
                "While it was away, a flock of crows found the food it had left behind and ate it all.",
                "It searched until dark and found nothing, and when it came home a rat had eaten what it had left.",
            ],
        ),
        pick(
            rng,
            [
                f"Meanwhile the {s.b} had shared what little it found with its neighbours, and they shared with it in turn.",
                f"The {s.b}, who had shared a few seeds with a mouse that morning, was invited to supper by the whole family.",
            ],
        ),
        pick(
            rng,
            [
                f"That night the {s.a} went to bed hungry, and the {s.b} did not.",
                f"So the {s.a}, who had wanted everything, ended the day with an empty belly.",
            ],
        ),
    ]
    title = pick(rng, [f"The Greedy {capital(s.a)}", f"The {capital(s.a)} Who Wanted More"])
    return title, " ".join(parts) + "\n\nMoral: " + pick(rng, MORALS["greed"])


def fable_kindness(rng: random.Random) -> tuple[str, str]:
    s = new_scene(
        rng,
        a=pick(rng, ["bear", "stag", "boar", "ox", "goat", "badger", "otter", "heron"]),
        b=pick(rng, ["mouse", "wren", "ant", "cricket", "vole", "sparrow", "frog", "robin"]),
    )
    trouble, rescue, result = pick(rng, HELP_TROUBLES)
    parts = [
        opening(rng, s, pick(rng, ["big", "strong", "old"]), pick(rng, ["small", "little", "tiny"])),
        pick(
            rng,
            [
                f"{s.time}, the {s.b} was {trouble}, and it cried for help.",
                f"One day the {s.b} found itself {trouble}, and no one came when it called.",
            ],
        ),
        pick(
            rng,
            [
                f"The {s.a} heard it. Though it was busy, it stopped, {rescue}, and the {s.b} was {result}.",
                f"The {s.a} could have walked past, but it turned back, {rescue}, and soon the {s.b} was {result}.",
            ],
        ),
        pick(
            rng,
            [
                f'"I will not forget this," said the {s.b}. The {s.a} only smiled, for what could so small a creature ever do for it?',
                f'"One day I will repay you," said the {s.b}, and the {s.a} laughed kindly at the thought.',
            ],
        ),
        pick(
            rng,
            [
                f"Many days later the {s.a} was in trouble of its own, and the {s.b} {pick(rng, REPAYS)}.",
                f"Before the season was out, the {s.b} {pick(rng, REPAYS)}, and so saved the {s.a}.",
            ],
        ),
        pick(
            rng,
            [
                "After that the two were friends for the rest of their lives.",
                f"The {s.a} never again thought that anyone was too small to matter.",
            ],
        ),
    ]
    return f"The {capital(s.a)} and the {capital(s.b)}", " ".join(parts) + "\n\nMoral: " + pick(rng, MORALS["kindness"])


def fable_trick(rng: random.Random) -> tuple[str, str]:
    s = new_scene(rng, a=pick(rng, ["fox", "weasel", "magpie", "marten", "lynx", "crow"]))
    food = pick(rng, FOODS)
    parts = [
        opening(rng, s, pick(rng, ["sly", "cunning", "clever"]), pick(rng, ["careful", "wise", "watchful"])),
        pick(
            rng,
            [
                f"{s.time}, the {s.b} was carrying {food} home.",
                f"The {s.b} had found {food} and sat down {s.place} to enjoy it.",
            ],
        ),
        pick(
            rng,
            [
                f'The {s.a} wanted it for itself, so it called out, "What a handsome {s.b} you are! Surely your voice is as fine as your looks. Sing for me!"',
                f'The {s.a} came near and said sweetly, "Friend, a creature as wise as you should not eat alone. Put that down and let me tell you a secret."',
                f'"How tired you look," said the {s.a}. "Set your load down and rest, and I will guard it for you."',
            ],
        ),
        pick(
            rng,
            [
                f"But the {s.b} had heard such sweet words before. It held on to its food and said nothing.",
                f"The {s.b} saw the hungry look in the {s.a}'s eyes and only held its food more tightly.",
            ],
        ),
        pick(
            rng,
            [
                f'Instead it said, "I hear there is a whole feast by the {pick(rng, ["mill", "barn", "old well", "farm gate"])}. Hurry, or the others will eat it first."',
                f'"Thank you," said the {s.b}, "but I saw a far better prize behind the {pick(rng, ["hedge", "barn", "mill"])}. You should run and get it before the dogs wake."',
            ],
        ),
        pick(
            rng,
            [
                f"The {s.a} ran off, and by the time it came back empty and cross, the {s.b} had eaten every crumb.",
                f"Off went the {s.a}, and found only a sleeping dog that chased it across the {s.place_short}. The {s.b} finished its meal in peace.",
            ],
        ),
    ]
    return f"The {capital(s.a)} and the {capital(s.b)}", " ".join(parts) + "\n\nMoral: " + pick(rng, MORALS["trick"])


def fable_together(rng: random.Random) -> tuple[str, str]:
    s = new_scene(
        rng,
        a=pick(rng, ["bear", "ox", "stag", "boar", "goat", "badger", "beaver", "otter"]),
        b=pick(rng, ["mouse", "wren", "squirrel", "magpie", "crow", "weasel", "vole", "robin"]),
    )
    task, done = pick(rng, TASKS)
    parts = [
        opening(rng, s, pick(rng, ["strong", "big", "heavy"]), pick(rng, ["clever", "small", "quick"])),
        pick(
            rng,
            [
                f"{s.time}, both of them needed to {task}.",
                f"One day the {s.a} and the {s.b} each wanted to {task}.",
            ],
        ),
        pick(
            rng,
            [
                f"The {s.a} tried first, but it was too heavy and too clumsy, and it gave up, tired and cross.",
                f"The {s.a} pushed and pulled all morning, and got nowhere.",
            ],
        ),
        pick(
            rng,
            [
                f"The {s.b} tried next, but it was too small and too weak, and it failed as well.",
                f"Then the {s.b} tried, and though it had a good plan, it had not the strength to carry it out.",
            ],
        ),
        pick(
            rng,
            [
                f'At last the {s.b} said, "You have the strength and I have the plan. Let us try together."',
                f'"Alone we fail," said the {s.a}. "Tell me what to do, and I will do the heavy part."',
            ],
        ),
        pick(
            rng,
            [
                f"So the {s.b} showed the way and the {s.a} did the work, and before long they {done}.",
                f"Working side by side, they {done} before the sun went down.",
            ],
        ),
        pick(
            rng,
            [
                f"From then on, whenever there was hard work to do {s.place}, the two of them did it together.",
                f"The other animals {s.place} were amazed, and soon they too began to help one another.",
            ],
        ),
    ]
    return f"The {capital(s.a)}, the {capital(s.b)} and the Hard Task", " ".join(parts) + "\n\nMoral: " + pick(
        rng, MORALS["together"]
    )


def fable_vanity(rng: random.Random) -> tuple[str, str]:
    a = pick(rng, sorted(VAIN_FEATURES))
    s = new_scene(rng, a=a)
    feature = VAIN_FEATURES[a]
    parts = [
        opening(rng, s, pick(rng, ["vain", "proud", "handsome"]), pick(rng, ["busy", "hard-working", "plain"])),
        pick(
            rng,
            [
                f"The {s.a} spent every morning admiring its {feature} in the still water.",
                f'"Is there anything in the {s.place_short} as fine as my {feature}?" the {s.a} asked every creature it met.',
            ],
        ),
        pick(
            rng,
            [
                f"The {s.b}, meanwhile, gathered food and mended its home, for the cold months were coming.",
                f"All through the {pick(rng, ['summer', 'autumn'])} the {s.b} worked, storing food and lining its home with dry moss.",
            ],
        ),
        pick(
            rng,
            [
                f'"Why work so hard?" laughed the {s.a}. "No one looks at you."',
                f'"You should rest and enjoy yourself," said the {s.a}, "as I do."',
            ],
        ),
        pick(
            rng,
            [
                f"Then the wind turned cold and the snow came, and the {s.a} had no food and no shelter.",
                f"One night a storm blew in, and the {s.a} found that its {feature} could not keep it warm or fed.",
            ],
        ),
        pick(
            rng,
            [
                f"Shivering, it knocked at the {s.b}'s door. The {s.b} let it in and shared its store.",
                f"Cold and hungry, the {s.a} went to the {s.b}, who gave it a place by the fire.",
            ],
        ),
        pick(
            rng,
            [
                f"The next year the {s.a} still liked its {feature}, but it worked beside the {s.b} all season.",
                f"After that winter, the {s.a} looked into the water a little less and worked a great deal more.",
            ],
        ),
    ]
    return f"The {capital(s.a)}'s {capital(feature.split()[-1])}", " ".join(parts) + "\n\nMoral: " + pick(
        rng, MORALS["vanity"]
    )


def fable_warning(rng: random.Random) -> tuple[str, str]:
    s = new_scene(rng, b=pick(rng, ["owl", "tortoise", "heron", "badger", "bear", "goat"]))
    danger, happened, cause = pick(rng, DANGERS)
    parts = [
        opening(rng, s, pick(rng, ["young", "reckless", "headstrong"]), pick(rng, ["old", "wise", "grey"])),
        pick(
            rng,
            [
                f'{s.time}, the {s.b} said to the {s.a}, "Be careful, for {danger}."',
                f"One day the {s.b} warned the {s.a} that {danger}.",
            ],
        ),
        pick(
            rng,
            [
                f'"You are old and afraid of everything," said the {s.a}, and went on its way.',
                f"The {s.a} only laughed, for it thought it knew better than anyone.",
                f'"I am young and quick," said the {s.a}. "Nothing will happen to me."',
            ],
        ),
        pick(
            rng,
            [
                f"But soon {happened}, just as the {s.b} had said.",
                f"Before long {happened}, and the {s.a} was in great danger.",
            ],
        ),
        pick(
            rng,
            [
                f"It escaped {cause} only because the {s.b} had followed and called out which way to go.",
                f"It was lucky to escape {cause} with its life, and it limped home sore and ashamed.",
            ],
        ),
        pick(
            rng,
            [
                f"After that, when the {s.b} spoke, the {s.a} listened.",
                f"From that day on, the {s.a} asked the {s.b} for advice before it set out anywhere new.",
            ],
        ),
    ]
    return f"The {capital(s.a)} Who Would Not Listen", " ".join(parts) + "\n\nMoral: " + pick(rng, MORALS["warning"])


FABLE_PLOTS = [fable_race, fable_greed, fable_kindness, fable_trick, fable_together, fable_vanity, fable_warning]


def make_fables(rng: random.Random, target_bytes: int = 300_000) -> str:
    """Numbered fables, separated by blank lines, up to about ``target_bytes``."""
    fables: list[str] = []
    size = 0
    while size < target_bytes:
        title, body = pick(rng, FABLE_PLOTS)(rng)
        fable = f"{len(fables) + 1}. {title}\n\n{body}\n"
        fables.append(fable)
        size += len(fable.encode()) + 1
    return "\n".join(fables)


# --------------------------------------------------------------------------
# Question and answer records: arithmetic, words, time, and the fables' valley.
# --------------------------------------------------------------------------

WORDS = [
    "garden",
    "lantern",
    "meadow",
    "river",
    "window",
    "pencil",
    "basket",
    "thunder",
    "harvest",
    "kettle",
    "orchard",
    "blanket",
    "candle",
    "ladder",
    "marble",
    "pepper",
    "saddle",
    "timber",
    "violin",
    "walnut",
    "anchor",
    "bridge",
    "cellar",
    "feather",
    "hollow",
    "island",
    "jacket",
    "mirror",
    "parcel",
    "quiver",
    "rocket",
    "silver",
    "tunnel",
    "velvet",
    "winter",
    "yellow",
]
OPPOSITES = {
    "early": "late",
    "hot": "cold",
    "up": "down",
    "light": "dark",
    "full": "empty",
    "open": "closed",
    "fast": "slow",
    "loud": "quiet",
    "wet": "dry",
    "high": "low",
    "old": "young",
    "strong": "weak",
    "wide": "narrow",
    "hard": "soft",
    "first": "last",
    "inside": "outside",
    "above": "below",
    "heavy": "light",
    "rough": "smooth",
    "deep": "shallow",
    "sharp": "blunt",
    "brave": "afraid",
}
PLURALS = {
    "mouse": "mice",
    "goose": "geese",
    "child": "children",
    "leaf": "leaves",
    "wolf": "wolves",
    "fox": "foxes",
    "box": "boxes",
    "berry": "berries",
    "sheep": "sheep",
    "deer": "deer",
    "tooth": "teeth",
    "foot": "feet",
    "knife": "knives",
    "city": "cities",
    "bus": "buses",
    "ox": "oxen",
    "hero": "heroes",
    "church": "churches",
    "story": "stories",
    "shelf": "shelves",
}
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
COLOUR_MIXES = {
    ("blue", "yellow"): "green",
    ("red", "yellow"): "orange",
    ("red", "blue"): "purple",
    ("red", "white"): "pink",
    ("black", "white"): "grey",
    ("blue", "white"): "light blue",
}
UNITS = [  # (big unit, small unit, how many small in one big)
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
    ("days", "hours", 24),
    ("weeks", "days", 7),
    ("metres", "centimetres", 100),
    ("kilograms", "grams", 1000),
    ("years", "months", 12),
    ("litres", "millilitres", 1000),
]
NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
]


def valley_facts(rng: random.Random) -> dict[str, dict[str, str]]:
    """A small, fixed world: where each animal of the valley lives, what it eats, what it is known for."""
    homes = [
        "in the reeds by the mill pond",
        "under the old oak",
        "on the windy cliff",
        "in the birch wood",
        "beside the stone bridge",
        "in the barley field",
        "in the wild orchard",
        "by the cold stream",
        "on the hill above the village",
    ]
    foods = [
        "acorns",
        "small fish",
        "beetles",
        "clover",
        "blackberries",
        "grain",
        "hazelnuts",
        "worms",
        "seeds",
        "pears",
        "roots",
        "moths",
    ]
    known = [
        "its patience",
        "its quick feet",
        "its loud song",
        "its sharp eyes",
        "its kindness",
        "its tricks",
        "its wisdom",
        "its bad temper",
        "its fine coat",
        "its long memory",
    ]
    return {
        animal: {"home": pick(rng, homes), "food": pick(rng, foods), "known": pick(rng, known)} for animal in ANIMALS
    }


def qa_arithmetic(rng: random.Random) -> tuple[str, str, str]:
    op = pick(rng, ["plus", "minus", "times"])
    if op == "plus":
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        result = a + b
    elif op == "minus":
        a, b = sorted((rng.randint(1, 99), rng.randint(1, 99)), reverse=True)
        result = a - b
    else:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        result = a * b
    question = pick(rng, [f"What is {a} {op} {b}?", f"How much is {a} {op} {b}?", f"Calculate {a} {op} {b}."])
    return "arithmetic", question, f"{a} {op} {b} is {result}."


def qa_compare(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.sample(range(1, 500), 2)
    if rng.random() < 0.5:
        return "numbers", f"Which is larger, {a} or {b}?", f"{max(a, b)} is larger than {min(a, b)}."
    return "numbers", f"Which is smaller, {a} or {b}?", f"{min(a, b)} is smaller than {max(a, b)}."


def qa_parity(rng: random.Random) -> tuple[str, str, str]:
    n = rng.randint(1, 999)
    kind = "even" if n % 2 == 0 else "odd"
    return "numbers", f"Is {n} even or odd?", f"{n} is {kind}."


def qa_sequence(rng: random.Random) -> tuple[str, str, str]:
    start, step = rng.randint(1, 20), rng.randint(2, 9)
    terms = [start + step * i for i in range(4)]
    shown = ", ".join(str(t) for t in terms)
    return (
        "numbers",
        f"What number comes next: {shown}?",
        f"The numbers go up by {step} each time, so the next one is {terms[-1] + step}.",
    )


def qa_units(rng: random.Random) -> tuple[str, str, str]:
    big, small, factor = pick(rng, UNITS)
    n = rng.randint(2, 12)
    return "units", f"How many {small} are in {n} {big}?", f"There are {n * factor} {small} in {n} {big}."


def qa_days(rng: random.Random) -> tuple[str, str, str]:
    if rng.random() < 0.5:
        i = rng.randrange(7)
        if rng.random() < 0.5:
            return "calendar", f"What day comes after {DAYS[i]}?", f"The day after {DAYS[i]} is {DAYS[(i + 1) % 7]}."
        return "calendar", f"What day comes before {DAYS[i]}?", f"The day before {DAYS[i]} is {DAYS[i - 1]}."
    i = rng.randrange(12)
    if rng.random() < 0.5:
        return "calendar", f"Which month comes after {MONTHS[i]}?", f"{MONTHS[(i + 1) % 12]} comes after {MONTHS[i]}."
    return "calendar", f"Which month is number {i + 1} in the year?", f"Month number {i + 1} is {MONTHS[i]}."


def qa_spelling(rng: random.Random) -> tuple[str, str, str]:
    word = pick(rng, WORDS)
    kind = rng.randrange(4)
    if kind == 0:
        return "words", f"How do you spell '{word}' backwards?", f"'{word}' spelled backwards is '{word[::-1]}'."
    if kind == 1:
        return "words", f"How many letters are in the word '{word}'?", f"The word '{word}' has {len(word)} letters."
    if kind == 2:
        return "words", f"What is the first letter of '{word}'?", f"The first letter of '{word}' is '{word[0]}'."
    spelled = "-".join(word.upper())
    return "words", f"Spell the word '{word}' letter by letter.", f"{spelled}."


def qa_opposite(rng: random.Random) -> tuple[str, str, str]:
    word, opposite = pick(rng, sorted(OPPOSITES.items()))
    if rng.random() < 0.5:
        word, opposite = opposite, word
    return "words", f"What is the opposite of '{word}'?", f"The opposite of '{word}' is '{opposite}'."


def qa_plural(rng: random.Random) -> tuple[str, str, str]:
    word, plural = pick(rng, sorted(PLURALS.items()))
    return "words", f"What is the plural of '{word}'?", f"The plural of '{word}' is '{plural}'."


def qa_colour(rng: random.Random) -> tuple[str, str, str]:
    (first, second), mixed = pick(rng, sorted(COLOUR_MIXES.items()))
    if rng.random() < 0.5:
        first, second = second, first
    return (
        "colours",
        f"What colour do you get when you mix {first} and {second}?",
        f"Mixing {first} and {second} gives {mixed}.",
    )


def qa_counting(rng: random.Random) -> tuple[str, str, str]:
    animal = pick(rng, ["fox", "hen", "duck", "goat", "cat", "frog"])
    a, b = rng.randint(1, 6), rng.randint(1, 6)
    question = (
        f"There are {NUMBER_WORDS[a]} {animal}s in the yard and {NUMBER_WORDS[b]} more come in. "
        f"How many {animal}s are in the yard now?"
    )
    return (
        "stories",
        question,
        f"{NUMBER_WORDS[a].capitalize()} and {NUMBER_WORDS[b]} make {NUMBER_WORDS[a + b]}, so there are {a + b} {animal}s.",
    )


def make_qa_valley(facts: dict[str, dict[str, str]]):
    """Questions about the fixed valley world, always answered the same way."""

    def qa_valley(rng: random.Random) -> tuple[str, str, str]:
        animal = pick(rng, ANIMALS)
        fact = facts[animal]
        kind = rng.randrange(3)
        if kind == 0:
            return "valley", f"In the valley, where does the {animal} live?", f"The {animal} lives {fact['home']}."
        if kind == 1:
            return "valley", f"In the valley, what does the {animal} eat?", f"The {animal} eats {fact['food']}."
        return (
            "valley",
            f"In the valley, what is the {animal} known for?",
            f"The {animal} is known for {fact['known']}.",
        )

    return qa_valley


def make_qa(rng: random.Random, target_bytes: int = 260_000) -> str:
    """JSON lines with ``question``, ``answer``, ``topic`` and ``text`` (both together)."""
    makers = [
        qa_arithmetic,
        qa_compare,
        qa_parity,
        qa_sequence,
        qa_units,
        qa_days,
        qa_spelling,
        qa_opposite,
        qa_plural,
        qa_colour,
        qa_counting,
        make_qa_valley(valley_facts(rng)),
    ]
    weights = [4, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 4]
    lines: list[str] = []
    size = 0
    while size < target_bytes:
        topic, question, answer = rng.choices(makers, weights)[0](rng)
        record = {
            "id": len(lines) + 1,
            "topic": topic,
            "question": question,
            "answer": answer,
            "text": f"Question: {question}\nAnswer: {answer}",
        }
        line = json.dumps(record, ensure_ascii=False)
        lines.append(line)
        size += len(line.encode()) + 1
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Code: Python modules over small record types, each with tests that pass.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Domain:
    """A record type the generated functions work on."""

    module: str  # its name in CODE_MODULES
    record: str  # class name
    item: str  # variable name for one record
    items: str  # variable name for many
    number: str  # a numeric field
    unit: str  # what the number counts
    label: str  # a text field
    labels: tuple[str, ...]
    low: int
    high: int


DOMAINS = [
    Domain(
        "orders",
        "Order",
        "order",
        "orders",
        "price",
        "pounds",
        "customer",
        ("Ada", "Bram", "Cleo", "Dev", "Edda", "Finn"),
        1,
        90,
    ),
    Domain(
        "readings",
        "Reading",
        "reading",
        "readings",
        "value",
        "degrees",
        "sensor",
        ("north", "south", "roof", "cellar", "porch"),
        -10,
        40,
    ),
    Domain(
        "books", "Book", "book", "books", "pages", "pages", "author", ("Hale", "Ibsen", "Jora", "Kemp", "Lund"), 40, 900
    ),
    Domain(
        "trees",
        "Tree",
        "tree",
        "trees",
        "height",
        "metres",
        "species",
        ("oak", "birch", "ash", "pine", "rowan", "alder"),
        1,
        40,
    ),
    Domain(
        "trips",
        "Trip",
        "trip",
        "trips",
        "distance",
        "kilometres",
        "driver",
        ("Mara", "Nils", "Oona", "Pim", "Rosa"),
        2,
        600,
    ),
    Domain(
        "songs",
        "Song",
        "song",
        "songs",
        "seconds",
        "seconds",
        "artist",
        ("Saga", "Tove", "Ulla", "Vik", "Wim"),
        90,
        420,
    ),
    Domain(
        "parcels",
        "Parcel",
        "parcel",
        "parcels",
        "weight",
        "grams",
        "city",
        ("Arden", "Brill", "Corwen", "Dunmore", "Elstow"),
        50,
        5000,
    ),
    Domain(
        "plants",
        "Plant",
        "plant",
        "plants",
        "water",
        "millilitres",
        "room",
        ("kitchen", "hall", "study", "attic", "porch"),
        10,
        500,
    ),
    Domain(
        "scores",
        "Score",
        "score",
        "scores",
        "points",
        "points",
        "player",
        ("Agnes", "Bo", "Cyril", "Dora", "Emil"),
        0,
        100,
    ),
    Domain(
        "meals",
        "Meal",
        "meal",
        "meals",
        "calories",
        "calories",
        "cook",
        ("Fern", "Gus", "Hilde", "Ivo", "Juno"),
        150,
        1200,
    ),
    Domain(
        "rivers",
        "River",
        "river",
        "rivers",
        "length",
        "kilometres",
        "region",
        ("Fernmere", "Highmoor", "Lowdale", "Saltmarsh", "Westvale"),
        5,
        800,
    ),
    Domain(
        "tasks", "Task", "task", "tasks", "minutes", "minutes", "owner", ("Kai", "Lena", "Milo", "Nora", "Otto"), 5, 240
    ),
]


@dataclass
class Record:
    """One sample record, used both to print test data and to compute expected results."""

    number: int
    label: str


def sample_records(rng: random.Random, d: Domain, count: int) -> list[Record]:
    return [Record(rng.randint(d.low, d.high), pick(rng, d.labels)) for _ in range(count)]


def records_literal(d: Domain, records: list[Record], indent: str = "    ") -> str:
    rows = "".join(f'{indent}    {d.record}({d.number}={r.number}, {d.label}="{r.label}"),\n' for r in records)
    return f"{indent}{d.items} = [\n{rows}{indent}]\n"


def measure(d: Domain) -> str:
    """'price in pounds', or just 'pages' where the unit would repeat the field's name."""
    return d.number if d.number == d.unit else f"{d.number} in {d.unit}"


def code_class(d: Domain) -> str:
    return (
        f"@dataclass\n"
        f"class {d.record}:\n"
        f'    """One {d.item}: its {measure(d)} and its {d.label}."""\n\n'
        f"    {d.number}: int\n"
        f"    {d.label}: str\n"
    )


# Each code_* function picks its variant once per module and returns the
# function's source and a maker of tests for that same variant: every test
# gets fresh sample data, and its expected values are computed here in Python.
TestMaker = Callable[[random.Random], str]


def code_total(rng: random.Random, d: Domain) -> tuple[str, TestMaker]:
    name = f"total_{d.number}"
    if rng.random() < 0.5:
        body = (
            f"    total = 0\n    for {d.item} in {d.items}:\n        total += {d.item}.{d.number}\n    return total\n"
        )
    else:
        body = f"    return sum({d.item}.{d.number} for {d.item} in {d.items})\n"
    function = (
        f"def {name}({d.items}):\n"
        f'    """Return the sum of {d.number} over all {d.items}{"" if d.number == d.unit else ", in " + d.unit}."""\n'
        + body
    )

    def test(rng: random.Random) -> str:
        records = sample_records(rng, d, rng.randint(2, 5))
        return (
            f"def test_{name}():\n"
            + records_literal(d, records)
            + f"    assert {name}({d.items}) == {sum(r.number for r in records)}\n"
        )

    return function, test


def code_filter(rng: random.Random, d: Domain) -> tuple[str, TestMaker]:
    above = rng.random() < 0.5
    word, op = ("above", ">") if above else ("below", "<")
    name = f"{d.items}_{word}"
    function = (
        f"def {name}({d.items}, limit):\n"
        f'    """Return the {d.items} whose {d.number} is {word} limit, in their original order."""\n'
        f"    return [{d.item} for {d.item} in {d.items} if {d.item}.{d.number} {op} limit]\n"
    )

    def test(rng: random.Random) -> str:
        records = sample_records(rng, d, rng.randint(3, 6))
        limit = rng.randint(d.low, d.high)
        kept = [r.number for r in records if (r.number > limit if above else r.number < limit)]
        return (
            f"def test_{name}():\n"
            + records_literal(d, records)
            + f"    kept = {name}({d.items}, {limit})\n"
            + f"    assert [{d.item}.{d.number} for {d.item} in kept] == {kept}\n"
        )

    return function, test


def code_extreme(rng: random.Random, d: Domain) -> tuple[str, TestMaker]:
    largest = rng.random() < 0.5
    word, builtin = ("largest", "max") if largest else ("smallest", "min")
    name = f"{word}_{d.item}"
    function = (
        f"def {name}({d.items}):\n"
        f'    """Return the {d.item} with the {word} {d.number}, or None when there are none."""\n'
        f"    if not {d.items}:\n"
        f"        return None\n"
        f"    return {builtin}({d.items}, key=lambda {d.item}: {d.item}.{d.number})\n"
    )

    def test(rng: random.Random) -> str:
        records = sample_records(rng, d, rng.randint(2, 5))
        best = (max if largest else min)(records, key=lambda r: r.number)
        return (
            f"def test_{name}():\n"
            + records_literal(d, records)
            + f"    assert {name}({d.items}).{d.number} == {best.number}\n"
            + f"    assert {name}([]) is None\n"
        )

    return function, test


def code_group(rng: random.Random, d: Domain) -> tuple[str, TestMaker]:
    name = f"{d.items}_by_{d.label}"
    if rng.random() < 0.5:
        body = (
            f"    groups = {{}}\n"
            f"    for {d.item} in {d.items}:\n"
            f"        groups.setdefault({d.item}.{d.label}, []).append({d.item})\n"
            f"    return groups\n"
        )
    else:
        body = (
            f"    groups = defaultdict(list)\n"
            f"    for {d.item} in {d.items}:\n"
            f"        groups[{d.item}.{d.label}].append({d.item})\n"
            f"    return dict(groups)\n"
        )
    function = (
        f"def {name}({d.items}):\n"
        f'    """Group the {d.items} by {d.label}: a dict from each {d.label} to its {d.items}."""\n' + body
    )

    def test(rng: random.Random) -> str:
        records = sample_records(rng, d, rng.randint(3, 6))
        counts: dict[str, int] = {}
        for r in records:
            counts[r.label] = counts.get(r.label, 0) + 1
        return (
            f"def test_{name}():\n"
            + records_literal(d, records)
            + f"    groups = {name}({d.items})\n"
            + f"    assert {{key: len(value) for key, value in groups.items()}} == {counts!r}\n"
        )

    return function, test


def code_average(rng: random.Random, d: Domain) -> tuple[str, TestMaker]:
    name = f"average_{d.number}"
    total = pick(rng, [f"total_{d.number}({d.items})", f"sum({d.item}.{d.number} for {d.item} in {d.items})"])
    function = (
        f"def {name}({d.items}):\n"
        f'    """Return the mean {d.number} of the {d.items}; raise ValueError when there are none."""\n'
        f"    if not {d.items}:\n"
        f'        raise ValueError("no {d.items} to average")\n'
        f"    return {total} / len({d.items})\n"
    )

    def test(rng: random.Random) -> str:
        count = rng.choice([2, 4, 5])
        records = sample_records(rng, d, count)
        mean = sum(r.number for r in records) / count
        return (
            f"def test_{name}():\n"
            + records_literal(d, records)
            + f"    assert {name}({d.items}) == {mean!r}\n"
            + "    with pytest.raises(ValueError):\n"
            + f"        {name}([])\n"
        )

    return function, test


def code_count(rng: random.Random, d: Domain) -> tuple[str, TestMaker]:
    name = f"count_{d.items}_for"
    function = (
        f"def {name}({d.items}, {d.label}):\n"
        f'    """Return how many of the {d.items} belong to the given {d.label}."""\n'
        f"    return sum(1 for {d.item} in {d.items} if {d.item}.{d.label} == {d.label})\n"
    )

    def test(rng: random.Random) -> str:
        records = sample_records(rng, d, rng.randint(3, 6))
        target = pick(rng, d.labels)
        return (
            f"def test_{name}():\n"
            + records_literal(d, records)
            + f'    assert {name}({d.items}, "{target}") == {sum(r.label == target for r in records)}\n'
        )

    return function, test


def code_sort(rng: random.Random, d: Domain) -> tuple[str, TestMaker]:
    descending = rng.random() < 0.5
    name = f"sort_by_{d.number}"
    order = "largest first" if descending else "smallest first"
    reverse = ", reverse=True" if descending else ""
    function = (
        f"def {name}({d.items}):\n"
        f'    """Return a new list of the {d.items}, {order} by {d.number}."""\n'
        f"    return sorted({d.items}, key=lambda {d.item}: {d.item}.{d.number}{reverse})\n"
    )

    def test(rng: random.Random) -> str:
        records = sample_records(rng, d, rng.randint(3, 5))
        expected = sorted((r.number for r in records), reverse=descending)
        return (
            f"def test_{name}():\n"
            + records_literal(d, records)
            + f"    assert [{d.item}.{d.number} for {d.item} in {name}({d.items})] == {expected}\n"
        )

    return function, test


def code_describe(rng: random.Random, d: Domain) -> tuple[str, TestMaker]:
    name = f"describe_{d.item}"
    label_first = rng.random() < 0.5
    template = (
        f'f"{{{d.item}.{d.label}}}: {{{d.item}.{d.number}}} {d.unit}"'
        if label_first
        else f'f"{d.record} of {{{d.item}.{d.label}}} ({{{d.item}.{d.number}}} {d.unit})"'
    )
    function = (
        f"def {name}({d.item}):\n"
        f'    """A one-line description of {article(d.item)}, for logs and reports."""\n'
        f"    return {template}\n"
    )

    def test(rng: random.Random) -> str:
        record = sample_records(rng, d, 1)[0]
        text = (
            f"{record.label}: {record.number} {d.unit}"
            if label_first
            else f"{d.record} of {record.label} ({record.number} {d.unit})"
        )
        return (
            f"def test_{name}():\n"
            f'    {d.item} = {d.record}({d.number}={record.number}, {d.label}="{record.label}")\n'
            f'    assert {name}({d.item}) == "{text}"\n'
        )

    return function, test


def code_clamp(rng: random.Random, d: Domain) -> tuple[str, TestMaker]:
    name = f"clamp_{d.number}"
    low, high = sorted(rng.sample(range(d.low, d.high + 1), 2))
    function = (
        f"def {name}(value, low={low}, high={high}):\n"
        f'    """Keep a {d.number} between low and high, so one bad {d.item} cannot skew a report."""\n'
        f"    if value < low:\n"
        f"        return low\n"
        f"    if value > high:\n"
        f"        return high\n"
        f"    return value\n"
    )

    def test(rng: random.Random) -> str:
        probes = [rng.randint(d.low - 20, d.high + 20) for _ in range(3)]
        return f"def test_{name}():\n" + "".join(
            f"    assert {name}({p}) == {min(max(p, low), high)}\n" for p in probes
        )

    return function, test


def code_running(rng: random.Random, d: Domain) -> tuple[str, TestMaker]:
    name = f"running_{d.number}"
    function = (
        f"def {name}({d.items}):\n"
        f'    """Yield the total {d.number} so far after each {d.item}."""\n'
        f"    total = 0\n"
        f"    for {d.item} in {d.items}:\n"
        f"        total += {d.item}.{d.number}\n"
        f"        yield total\n"
    )

    def test(rng: random.Random) -> str:
        records = sample_records(rng, d, rng.randint(2, 5))
        totals, total = [], 0
        for r in records:
            total += r.number
            totals.append(total)
        return (
            f"def test_{name}():\n" + records_literal(d, records) + f"    assert list({name}({d.items})) == {totals}\n"
        )

    return function, test


def code_find(rng: random.Random, d: Domain) -> tuple[str, TestMaker]:
    name = f"first_{d.item}_for"
    function = (
        f"def {name}({d.items}, {d.label}):\n"
        f'    """Return the first {d.item} of the given {d.label}, or None if there is none."""\n'
        f"    for {d.item} in {d.items}:\n"
        f"        if {d.item}.{d.label} == {d.label}:\n"
        f"            return {d.item}\n"
        f"    return None\n"
    )

    def test(rng: random.Random) -> str:
        records = sample_records(rng, d, rng.randint(3, 5))
        target = pick(rng, d.labels)
        found = next((r for r in records if r.label == target), None)
        check = (
            f'    assert {name}({d.items}, "{target}") is None\n'
            if found is None
            else f'    assert {name}({d.items}, "{target}").{d.number} == {found.number}\n'
        )
        return f"def test_{name}():\n" + records_literal(d, records) + check

    return function, test


CODE_PIECES = [
    code_total,
    code_filter,
    code_extreme,
    code_group,
    code_average,
    code_count,
    code_sort,
    code_describe,
    code_clamp,
    code_running,
    code_find,
]


# Each module works on three record types, and each trio appears in two
# modules, so whichever module ends up in the validation split, the model has
# trained on its record types elsewhere.
CODE_MODULES = {
    "almanac": ("orders", "trips", "scores"),
    "bakery": ("readings", "songs", "meals"),
    "courier": ("books", "parcels", "rivers"),
    "depot": ("trees", "plants", "tasks"),
    "estate": ("scores", "orders", "trips"),
    "harbour": ("meals", "readings", "songs"),
    "inn": ("rivers", "books", "parcels"),
    "library": ("tasks", "trees", "plants"),
}


def make_code_module(rng: random.Random, name: str, domains: list[Domain]) -> str:
    """One module: its record classes, their functions in shuffled order, then the tests."""
    functions, test_makers = [], []
    for d in domains:
        for piece in CODE_PIECES:
            function, test_maker = piece(rng, d)
            functions.append(function)
            test_makers.append(test_maker)
    rng.shuffle(functions)
    # Each function's test once, then thirty more with fresh data.
    makers = test_makers + [pick(rng, test_makers) for _ in range(30)]
    tests = [maker(rng).replace("def test_", f"def test_{i:02d}_", 1) for i, maker in enumerate(makers)]
    kinds = ", ".join(d.items for d in domains[:-1]) + f" and {domains[-1].items}"
    fields = "".join(f"    {d.record}: {measure(d)}, and {article(d.label)}\n" for d in domains)
    header = (
        f'"""The {name}: small helpers for working with {kinds}.\n\n'
        f"Record types:\n{fields}\n"
        f"The functions below are plain Python, so they can be read and tested one at a time.\n"
        f'"""\n\n'
        f"from collections import defaultdict\n"
        f"from dataclasses import dataclass\n\n"
        f"import pytest\n"
    )
    return "\n\n".join([header, *(code_class(d) for d in domains), *functions, *tests])


def make_code(rng: random.Random) -> dict[str, str]:
    """The modules, keyed by file name."""
    by_name = {d.module: d for d in DOMAINS}
    return {
        f"{name}.txt": make_code_module(rng, name, [by_name[m] for m in modules])
        for name, modules in CODE_MODULES.items()
    }


# --------------------------------------------------------------------------
# Weather: a CSV of daily reports for made-up towns, with a `text` column.
# --------------------------------------------------------------------------

TOWNS = {  # town -> how much warmer than the valley average it runs, in degrees
    "Millbrook": 0,
    "Ashford Cross": 1,
    "Fernmere": -1,
    "Kestrel Bay": 2,
    "Oakhollow": -2,
    "Stonebridge": 0,
    "Wrenfield": 1,
    "High Tarn": -4,
}
MONTH_MEAN = [3, 4, 7, 10, 13, 16, 18, 18, 15, 11, 7, 4]  # mean daily high, degrees C
WIND_DIRECTIONS = ["north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west"]


def weather_report(rng: random.Random, day: datetime.date, town: str) -> str:
    high = MONTH_MEAN[day.month - 1] + TOWNS[town] + rng.randint(-4, 4)
    low = high - rng.randint(4, 10)
    wind_speed = pick(rng, ["calm", "light", "moderate", "fresh", "strong"])
    wind = "calm air" if wind_speed == "calm" else f"a {wind_speed} {pick(rng, WIND_DIRECTIONS)} wind"
    if low <= 0 and rng.random() < 0.4:
        sky = pick(
            rng,
            ["Snow showers through the morning", "A light fall of snow overnight", "Sleet turning to snow by evening"],
        )
    elif low <= 1:
        sky = pick(
            rng,
            [
                "A hard frost at dawn, then bright sunshine",
                "Frost and freezing fog early",
                "A frosty start and a clear, cold day",
            ],
        )
    else:
        sky = pick(
            rng,
            [
                "Morning fog lifting by ten o'clock",
                "Sunshine from start to finish",
                "Grey skies with drizzle at times",
                "Heavy showers, some with thunder",
                "Cloud building through the afternoon",
                "Long sunny spells",
                "Steady rain until midday, then brighter",
                "A dull, damp day",
            ],
        )
    ending = pick(
        rng,
        [
            f"High of {high}°C, low of {low}°C, with {wind}.",
            f"Temperatures from {low}°C overnight to {high}°C in the afternoon; {wind}.",
            f"{capital(wind)}; the thermometer reached {high}°C and fell to {low}°C at night.",
        ],
    )
    return f"{sky} in {town}. {ending}"


def make_weather(rng: random.Random, target_bytes: int = 130_000) -> str:
    """CSV rows with ``date``, ``town`` and ``text``, a few towns a day from 1 January 2023."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["date", "town", "text"])
    day = datetime.date(2023, 1, 1)
    while out.tell() < target_bytes:
        for town in rng.sample(sorted(TOWNS), 3):
            writer.writerow([day.isoformat(), town, weather_report(rng, day, town)])
        day += datetime.timedelta(days=1)
    return out.getvalue()


# --------------------------------------------------------------------------


def build_all() -> dict[str, str]:
    """Every output file, relative to sample_texts/, and its text."""
    files = {
        "fables.txt": make_fables(random.Random(SEED)),
        "qa.jsonl": make_qa(random.Random(SEED + 1)),
        "weather.csv": make_weather(random.Random(SEED + 3)),
    }
    for name, text in make_code(random.Random(SEED + 2)).items():
        files[f"code/{name}"] = text
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the files on disk; write nothing")
    parser.add_argument("--output", type=Path, default=OUTPUT_DIR, help="where to write (default: sample_texts/)")
    args = parser.parse_args(argv)
    differing = []
    for name, text in build_all().items():
        path = args.output / name
        data = text.encode("utf-8")
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                differing.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"{name}: {len(data):,} bytes")
    if differing:
        print("out of date: " + ", ".join(differing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
