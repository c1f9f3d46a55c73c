"""rmaat_model/data"""
