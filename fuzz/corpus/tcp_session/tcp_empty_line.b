  V1 	 
