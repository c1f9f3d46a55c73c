"""rmaat_model"""
