"""Word lists shared by the corpus and the task generators.

Every word a task uses also occurs in the pretraining corpus, so the base model has a trained
embedding for it; what the tasks add is a *format* the corpus never shows.
"""

NAMES = ["Anna", "Tom", "Mia", "Sam", "Lena", "Omar", "Ravi", "Sara", "Ben", "Lucy",
         "Noah", "Emma", "Ali", "Zoe", "Jack", "Nina", "Leo", "Ivy", "Max", "Rosa"]
PRONOUN = {name: ("She" if name in {"Anna", "Mia", "Lena", "Sara", "Lucy", "Emma", "Zoe",
                                     "Nina", "Ivy", "Rosa"} else "He") for name in NAMES}
PLACES = ["park", "market", "school", "river", "forest", "beach", "library", "kitchen",
          "garden", "station"]
COLORS = ["red", "blue", "green", "yellow", "white", "black", "brown", "small", "big", "old"]
ITEMS = ["apples", "books", "cups", "pens", "shells", "stones", "cakes", "hats", "boxes",
         "flowers", "eggs", "coins"]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
ANIMALS = ["dog", "cat", "bird", "horse", "fox", "duck", "rabbit", "goat"]

# Things one can review, and the parts of them a review talks about.
WORKS = ["film", "book", "song", "play", "show", "meal", "game", "album"]
ASPECTS = ["plot", "acting", "music", "ending", "story", "characters", "pacing", "dialogue",
           "writing", "sound", "design", "food", "service", "price", "cast", "voice"]
POSITIVE = ["great", "wonderful", "brilliant", "superb", "excellent", "lovely", "delightful",
            "charming", "clever", "moving", "fresh", "perfect"]
NEGATIVE = ["awful", "terrible", "boring", "dull", "dreadful", "bad", "weak", "poor",
            "clumsy", "flat", "tired", "messy"]
FEEL_GOOD = ["happy", "glad", "pleased", "excited", "cheerful"]
FEEL_BAD = ["sad", "upset", "annoyed", "bored", "grumpy"]
