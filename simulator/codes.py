"""DfE code sets the simulator draws from (Common Basic Data Set values)."""

ETHNICITY = [("WBRI", 70), ("WIRI", 1), ("WOTH", 6), ("WROM", 1), ("MWBC", 2), ("MWBA", 1), ("MWAS", 2),
             ("MOTH", 2), ("AIND", 3), ("APKN", 2), ("ABAN", 1), ("AOTH", 1), ("BCRB", 1), ("BAFR", 3),
             ("CHNE", 1), ("OOTH", 1), ("REFU", 1), ("NOBT", 1)]
LANGUAGES = [("ENG", 85), ("POL", 3), ("URD", 1), ("BEN", 1), ("PAN", 1), ("ARA", 1), ("SOM", 1), ("LIT", 1),
             ("RON", 2), ("TUR", 1), ("NEP", 2), ("POR", 1)]
RELIGION = [("NOR", 45), ("CHR", 40), ("MUS", 6), ("HIN", 2), ("SIK", 1), ("BUD", 1), ("JEW", 1), ("REF", 4)]
SEN_NEEDS = ["SPLD", "MLD", "SLD", "PMLD", "SEMH", "SLCN", "HI", "VI", "MSI", "PD", "ASD", "OTH", "NSA"]
EXCLUSION_REASONS = ["PP", "PA", "VP", "VA", "BU", "RA", "DA", "DM", "TH", "DB", "OW", "MT"]
RELATIONSHIPS = {"mother": "PAM", "father": "PAF", "carer": "CAR", "step": "STP", "relative": "REL"}
TITLES = {"F": ["Mrs", "Ms", "Miss", "Dr"], "M": ["Mr", "Mr", "Mr", "Dr"]}

# Attendance marks (DfE national codes)
PRESENT = "/\\LBDJPVWK"
AUTHORISED = "CEIMRSTQH"
UNAUTHORISED = "GNOU"
NOT_COUNTED = "XYZ#"
NO_MARK = "-"

TOWNS = [("Canterbury", "CT1"), ("Canterbury", "CT2"), ("Whitstable", "CT5"), ("Herne Bay", "CT6"),
         ("Margate", "CT9"), ("Ramsgate", "CT11"), ("Ashford", "TN23"), ("Ashford", "TN24"),
         ("Maidstone", "ME14"), ("Maidstone", "ME15"), ("Sittingbourne", "ME10"), ("Dover", "CT16"),
         ("Folkestone", "CT20"), ("Tonbridge", "TN9"), ("Sevenoaks", "TN13"), ("Dartford", "DA1")]

# Formal forenames with common short forms (the LA holds the formal one, a school may not)
FORMAL_NAMES_M = ["Joseph", "James", "William", "Thomas", "Oliver", "Harry", "Jack", "George", "Charles",
                  "Alexander", "Samuel", "Daniel", "Benjamin", "Matthew", "Edward", "Henry", "Robert", "Michael",
                  "Noah", "Leo", "Oscar", "Archie", "Arthur", "Freddie", "Theo", "Isaac", "Jacob", "Ethan",
                  "Lucas", "Mohammed", "Adam", "Reuben", "Finley", "Teddy", "Albie", "Ronnie"]
FORMAL_NAMES_F = ["Emily", "Olivia", "Amelia", "Isabella", "Elizabeth", "Charlotte", "Jessica", "Sophie",
                  "Katherine", "Rebecca", "Victoria", "Abigail", "Alexandra", "Margaret", "Eleanor", "Grace",
                  "Lily", "Freya", "Ava", "Isla", "Poppy", "Mia", "Evie", "Ella", "Florence", "Rosie", "Sienna",
                  "Maisie", "Phoebe", "Matilda", "Harriet", "Zara", "Amira", "Esme", "Daisy", "Emma"]
SHORT_FORMS = {"Joseph": "Joe", "James": "Jamie", "William": "Will", "Thomas": "Tom", "Oliver": "Ollie",
               "Charles": "Charlie", "Alexander": "Alex", "Samuel": "Sam", "Daniel": "Dan", "Benjamin": "Ben",
               "Matthew": "Matt", "Edward": "Ed", "Henry": "Harry", "Robert": "Rob", "Michael": "Mike",
               "Frederick": "Freddie", "Theodore": "Theo", "Archibald": "Archie",
               "Emily": "Emma", "Isabella": "Bella", "Elizabeth": "Beth", "Charlotte": "Lottie",
               "Jessica": "Jess", "Katherine": "Kate", "Rebecca": "Becky", "Victoria": "Tori", "Abigail": "Abbie",
               "Alexandra": "Lexi", "Margaret": "Maggie", "Eleanor": "Ellie", "Florence": "Flo",
               "Matilda": "Tilly", "Harriet": "Hattie"}
