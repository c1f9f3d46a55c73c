"""astro_sim"""
