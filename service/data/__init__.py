"""A job's data: where each dataset comes from, uploads and their checks, imbalance
profiles and the train / validation / test splits (DESIGN.md section 4).

numpy (and PIL for image folders) only: the API checks a spec against its data at
submit time with the same code the worker trains with. Imports neither the
database nor the API.
"""
